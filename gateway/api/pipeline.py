"""What every OpenAI endpoint view shares: parse, validate, route, render (plain or SSE)."""

import logging
import time

import orjson
from flask import Response
from flask import current_app
from flask import g
from flask import request

from gateway import errors
from gateway.infra.coop import let_others_run
from gateway.cache import HIT_HEADER
from gateway.cache import KEY_HEADER
from gateway.cache import replay
from gateway.api.body import parse_body
from gateway.spend.modeldata import estimate_tokens
from gateway.routing.router import Outcome
from gateway.api.schemas import validate_body
from gateway.spend.meter import COST_HEADER
from gateway.spend.meter import AddedUsageOption
from gateway.wire.sse import DONE_EVENT
from gateway.wire.sse import encode

log = logging.getLogger("gateway.api")

# Stop nginx and other proxies from buffering the stream; SSE must reach the client chunk by chunk.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(data, status=200, headers=None):
    """A JSON answer serialized with orjson."""
    return Response(orjson.dumps(data), status=status, headers=headers, mimetype="application/json")


def read_body(limit):
    """The raw request body, at most `limit` bytes, whether sized or chunked (413 above it)."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes.")
    # Read the server's input directly: werkzeug's capped stream silently truncates a chunked body
    # at the cap instead of rejecting it. One byte past the limit tells the two apart.
    data = request.environ["wsgi.input"].read(limit + 1 if length is None else length)
    if len(data) > limit:
        raise errors.PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes.")
    return data


def serve(endpoint, path_model=None):
    """Handle one OpenAI-style call for `endpoint` (chat, completions, embeddings)."""
    gateway = current_app.extensions["gateway"]
    body = parse_body(read_body(gateway.settings.max_body_bytes))
    if path_model is not None:
        body["model"] = path_model
    validate_body(endpoint, body)
    stream = body.get("stream") is True
    if stream and endpoint == "embeddings":
        raise errors.BadRequestError("Embeddings cannot be streamed.", param="stream")
    caller = g.get("caller")
    rules = caller.rules if caller is not None else None
    meter = gateway.spend.start(g.request_id, rules, endpoint, body, stream)
    client_usage = True
    if stream:
        # Bill streams exactly: ask every upstream for its usage; the chunk is dropped again
        # below when the client did not ask for it.
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        client_usage = bool(options.get("include_usage"))
        if not client_usage:
            body["stream_options"] = AddedUsageOption(options, include_usage=True)
    release = plan = cached = allowed = None
    try:
        if rules is not None:
            release, allowed = apply_key_rules(gateway, rules, body, meter)
        if gateway.cache is not None:
            plan = gateway.cache.plan(endpoint, body, gateway.router.resolve(body.get("model")), stream, rules)
            cached = plan.lookup() if plan is not None else None
        if cached is None and rules is not None and rules.max_budget is not None:
            meter.reserve(gateway.router.reachable(body, allowed))
    except BaseException as exc:
        if release:
            release()
        meter.abandon(exc)
        raise
    if cached is not None:
        outcome, result = Outcome(group=gateway.router.resolve(body.get("model"))), cached
        meter.cache_hit = True
        # A hit does no I/O that would yield: let the worker's other connections have a turn, or
        # a client pipelining hits could hold the worker for seconds.
        let_others_run()
        if stream:
            result = replay(cached)
    else:
        try:
            outcome, result = gateway.router.call(endpoint, body, stream, allowed, cap_output=meter.hold > 0)
        except BaseException as exc:
            if release:
                release()
            meter.fail(exc, getattr(exc, "outcome", None))
            _close_quietly(meter)
            raise
    headers = outcome_headers(outcome)
    if plan is not None:
        headers[HIT_HEADER] = "HIT" if cached is not None else "MISS"
        headers[KEY_HEADER] = plan.digest
    if stream:
        if plan is not None and cached is None:
            result = plan.tap(result)
        result = meter.watch(outcome, result, client_usage)
        events = _sse(result, g.request_id)
        if cached is not None:
            # A replay waits on nothing: send it in one write rather than one per chunk.
            events = [b"".join(events)]
        response = Response(events, headers={**SSE_HEADERS, **headers}, mimetype="text/event-stream")
        # The generator's finally closes the stream; a response closed before its first chunk
        # never runs that generator, so the close is registered here too (close is idempotent).
        response.call_on_close(result.close)
        if release:
            response.call_on_close(release)
        response.call_on_close(meter.close)  # the row, once the last byte has gone out
        return response
    if release:
        release()
    headers[COST_HEADER] = f"{meter.bill_answer(outcome, result):.10g}"
    try:
        payload = orjson.dumps(result)
    except (orjson.JSONEncodeError, TypeError) as exc:
        # An answer that cannot be passed on (nested past orjson's 255 levels): the upstream's
        # fault, a 502; its tokens were spent, so the row keeps their cost, as an error.
        meter.status = "error"
        meter.error = errors.UpstreamError("The upstream's answer could not be passed on: it is not "
                                           "valid JSON for a client (nested too deeply).",
                                           code="upstream_invalid_answer")
        _close_quietly(meter)
        raise meter.error from exc
    if plan is not None and cached is None:
        plan.store(result)
    response = Response(payload, headers=headers, mimetype="application/json")
    response.call_on_close(meter.close)
    return response


def _close_quietly(meter):
    """Write a failed call's row without hiding the failure itself."""
    try:
        meter.close()
    except Exception:  # noqa: BLE001
        log.exception("could not record a failed call's spend row")


def apply_key_rules(gateway, rules, body, meter):
    """A virtual key's aliases, allowed models and per-key limits, before any upstream work.

    Returns (release, allowed): what gives the call's parallel slot back (or None), and the groups
    the call may reach (None: every group), which the router holds its fallbacks to."""
    requested = body.get("model")
    if isinstance(requested, str) and requested in rules.aliases:
        body["model"] = requested = rules.aliases[requested]
        meter.requested = requested
    router = gateway.router
    allowed = router.allowed_groups(rules.models)
    if allowed is not None:
        try:
            group = router.resolve(requested)
        except errors.NotFoundError:
            if requested not in rules.models:
                raise _not_allowed(requested, rules, "model") from None
            # Name only what the key may see, never the gateway's other models.
            raise errors.NotFoundError(f"The model `{str(requested)[:200]}` does not exist on this gateway.",
                                       param="model", code="model_not_found") from None
        # Under --model every name is served by the one deployment: the name asked for counts too.
        if group not in allowed and not (router.settings.catch_all and requested in rules.models):
            raise _not_allowed(requested if isinstance(requested, str) and requested else group, rules, "model")
        for param in ("fallbacks", "context_window_fallbacks"):
            for name in _named_fallbacks(body.get(param)):
                if router.aliases.get(name, name) not in allowed:
                    raise _not_allowed(name, rules, param)
    state = router.state
    if rules.rpm_limit is not None:
        allowed_now, wait = (False, 60.0) if rules.rpm_limit <= 0 else state.admit(
            f"key-rpm:{rules.identity}", rules.rpm_limit)
        if not allowed_now:
            raise errors.RateLimitError(f"This key's limit of {rules.rpm_limit} requests per minute is reached.",
                                        headers={"Retry-After": str(max(1, round(wait)))})
    if rules.tpm_limit is not None:
        # Hold the prompt estimate plus max_tokens in the key's token window; settled to the
        # real usage when the call ends.
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        amount = max(1, estimate_tokens(body) + (asked if isinstance(asked, int) and asked > 0 else 0))
        allowed_now, wait = (False, 60.0) if rules.tpm_limit <= 0 else state.admit(
            f"key-tpm:{rules.identity}", rules.tpm_limit, amount)
        if not allowed_now:
            raise errors.RateLimitError(
                f"This key's limit of {rules.tpm_limit} tokens per minute is reached "
                f"(this call needs about {amount}).", headers={"Retry-After": str(max(1, round(wait)))})
        meter.tpm_reserved = amount
    if rules.max_parallel_requests is not None:
        # A slot per call, expiring with the call's longest life: a worker that dies mid-call
        # cannot hold one for good.
        key, member = f"key-parallel:{rules.identity}", meter.request_id
        if rules.max_parallel_requests <= 0 or not state.acquire(
                key, rules.max_parallel_requests, member, gateway.spend.hold_seconds):
            raise errors.RateLimitError(
                f"This key's limit of {rules.max_parallel_requests} parallel requests is reached.",
                headers={"Retry-After": "1"})
        released = []

        def release():
            if not released:  # a stream closes through two paths; count it once
                released.append(True)
                state.release(key, member)
        return release, allowed
    return None, allowed


def _named_fallbacks(value):
    """Every model name a request's fallbacks field names (LiteLLM's map form or a plain list)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for targets in item.values():
                    for name in [targets] if isinstance(targets, str) else targets if isinstance(targets, list) else ():
                        if isinstance(name, str):
                            yield name


def _not_allowed(name, rules, param):
    return errors.PermissionDeniedError(
        f"This key may not use the model `{str(name)[:200]}`. Allowed: {', '.join(rules.models) or 'none'}",
        param=param, code="model_not_allowed")


def outcome_headers(outcome):
    """What happened, for clients and operators: deployment (never a key), retries, fallbacks, overhead.

    Named as the LiteLLM proxy names them, so dashboards and clients built on those keep working.
    """
    deployment = outcome.deployment
    overhead_ms = (time.monotonic() - outcome.started - outcome.upstream_seconds) * 1000
    headers = {"x-litellm-model-group": outcome.served_group,
               "x-litellm-attempted-retries": str(outcome.retries),
               "x-litellm-attempted-fallbacks": str(outcome.fallbacks),
               "x-litellm-overhead-duration-ms": f"{max(0.0, overhead_ms):.2f}"}
    if deployment is not None:
        headers["x-litellm-model-id"] = deployment.id
        if deployment.provider.api_base:
            headers["x-litellm-model-api-base"] = deployment.provider.api_base
    return headers


def _sse(stream, request_id):
    """Encode chunks as SSE; an error after the first byte becomes a final error event."""
    try:
        for chunk in stream:
            yield encode(chunk)
        yield DONE_EVENT
    except errors.GatewayError as exc:
        log.warning("request %s: stream ended by %s: %s", request_id, type(exc).__name__, exc.message)
        yield encode(exc.body())
    except Exception:  # never a traceback on the wire; the log keeps it
        log.exception("request %s: stream failed", request_id)
        yield encode(errors.GatewayError(f"Internal error while streaming (request id {request_id}).").body())
    finally:
        stream.close()
