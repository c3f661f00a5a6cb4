"""The steps of one OpenAI call (chat, completions, embeddings), in the order they run: parse,
validate, open the record (the meter), key rules, cache plan, budget hold, route, render (plain or
SSE). A whole answer's row is written as it is rendered, a stream's once its last byte has gone out;
the observers hear of the call after that."""

import logging
import time
from functools import partial

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
from gateway.api.controls import apply_headers
from gateway.api.controls import check_mock
from gateway.access.rules import apply_key_rules
from gateway.access.rules import model_access
from gateway.api.conversation import Conversation
from gateway.providers.messages import error_body as anthropic_error
from gateway.routing.router import Outcome
from gateway.api.schemas import validate_body
from gateway.spend.meter import COST_HEADER
from gateway.providers.audio import TEXT_BODY
from gateway.providers.base import AUDIO_UPLOADS
from gateway.providers.base import AddedUsageOption
from gateway.wire.multipart import parse_form
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


# Endpoints answered whole, never as a stream.
NOT_STREAMED = {"embeddings": "Embeddings", "images": "Image generation", "moderations": "Moderations",
                "rerank": "Rerank", "transcriptions": "Transcription", "translations": "Translation"}


class Call:
    """One call on its way through the steps: what each step learned that a later one needs."""

    __slots__ = ("request_id", "endpoint", "body", "stream", "rules", "meter", "client_usage", "release",
                 "allowed", "plan", "cached", "outcome", "conversation")

    def __init__(self, request_id, endpoint, body, rules):
        self.request_id = request_id
        self.endpoint = endpoint
        self.body = body
        self.stream = False
        self.rules = rules  # the virtual key's rules (None: master key or no key needed)
        self.meter = None  # the call's bill and ledger row (gateway/spend/meter.py)
        self.client_usage = True  # whether a stream's client asked for the usage chunk
        self.release = None  # gives the key's parallel slot back
        self.allowed = None  # the groups the key may reach (None: every group)
        self.plan = None  # what the call may do with the cache
        self.cached = None  # the cached answer, on a hit
        self.outcome = None  # what routing did (gateway/routing/router.py Outcome)
        self.conversation = None  # a Responses call's state (gateway/api/conversation.py)


def serve(endpoint, path_model=None):
    """Handle one OpenAI-style call for `endpoint` (chat, completions, embeddings)."""
    gateway = current_app.extensions["gateway"]
    call = parse(gateway, endpoint, path_model)
    validate(call)
    if endpoint == "responses":
        call.conversation = Conversation(gateway.responses, call.rules)
        call.conversation.prepare(call.body)
    open_record(gateway, call)
    try:
        key_rules(gateway, call)
        cache_plan(gateway, call)
        budget_hold(gateway, call)
    except BaseException as exc:
        if call.release:
            call.release()
        call.meter.abandon(exc)
        gateway.observers.tell(call.meter)
        raise
    answer = route(gateway, call)
    headers = answer_headers(call)
    if call.endpoint == "speech":
        return render_bytes(gateway, call, answer, headers)
    if call.stream:
        return render_stream(gateway, call, answer, headers)
    return render_answer(gateway, call, answer, headers)


def parse(gateway, endpoint, path_model):
    """The call: its JSON body, or an audio upload's form (the model named in the path wins), and the
    caller's key rules."""
    limit = gateway.settings.max_body_bytes
    if endpoint in AUDIO_UPLOADS:
        body = upload_body(read_body(limit), request.headers.get("Content-Type"), limit)
    else:
        body = parse_body(read_body(limit))
    if path_model is not None:
        body["model"] = path_model
    caller = g.get("caller")
    check_mock(body, caller, gateway.settings)
    apply_headers(body, request.headers)
    if endpoint in ("messages", "count_tokens"):
        anthropic_headers(body, request.headers)
    return Call(g.request_id, endpoint, body, caller.rules if caller is not None else None)


def upload_body(raw, content_type, limit):
    """An audio upload's form as a body: its text fields, `file` an Upload, numbers as numbers."""
    fields, files = parse_form(raw, content_type, limit)
    if "file" not in files:
        raise errors.BadRequestError("`file` (the audio) is required.", param="file")
    body = dict(fields)
    body["file"] = files["file"]
    if "temperature" in body:
        try:
            body["temperature"] = float(body["temperature"])
        except (TypeError, ValueError):
            raise errors.BadRequestError("`temperature` must be a number.", param="temperature") from None
    return body


# Anthropic's request headers a Messages call honours: passed to Anthropic deployments as given.
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


def anthropic_headers(body, headers):
    """The client's `anthropic-version` / `anthropic-beta` headers beside the body (the provider
    sends them upstream); a body field of that name is the gateway's, never a client's."""
    body.pop("anthropic_headers", None)
    found = {}
    for name in ANTHROPIC_HEADERS:
        value = headers.get(name)
        if value:
            if len(value) > 1024 or not value.isprintable():
                raise errors.BadRequestError(f"The {name} header is not a valid value.", param=name)
            found[name] = value
    if found:
        body["anthropic_headers"] = found


def count_tokens():
    """POST /v1/messages/count_tokens: the key's model access, then the deployment's own count
    (Anthropic) or the gateway's estimate of the translated prompt; no spend, no limits."""
    gateway = current_app.extensions["gateway"]
    call = parse(gateway, "count_tokens", None)
    validate_body("count_tokens", call.body)
    allowed = model_access(call.rules, call.body, gateway.router)
    _outcome, answer = gateway.router.call("count_tokens", call.body, False, allowed)
    return json_response(answer)


def validate(call):
    """The body against the endpoint's schema; whether the call streams."""
    validate_body(call.endpoint, call.body)
    call.stream = call.body.get("stream") is True or call.endpoint == "speech"  # speech: audio bytes as they come
    if call.stream and call.endpoint in NOT_STREAMED:
        raise errors.BadRequestError(f"{NOT_STREAMED[call.endpoint]} cannot be streamed here.", param="stream")


def open_record(gateway, call):
    """The call's meter, journaled as started (when a cache lookup comes first, only on a miss: see
    route); a stream asks its upstream for usage."""
    body = call.body
    call.meter = gateway.spend.start(call.request_id, call.rules, call.endpoint, body, call.stream,
                                     journal=gateway.cache is None)
    if call.stream and call.endpoint in ("chat", "completions"):
        # Bill streams exactly: ask every upstream for its usage; the chunk is dropped again
        # (Meter.watch) when the client did not ask for it. (Anthropic's and the Responses API's
        # streams carry their usage anyway.)
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        call.client_usage = bool(options.get("include_usage"))
        if not call.client_usage:
            body["stream_options"] = AddedUsageOption(options, include_usage=True)


def key_rules(gateway, call):
    """A virtual key's aliases, allowed models and limits, its levels' limits, and the end user's
    block and limits (gateway/access/rules.py)."""
    if call.rules is not None or call.meter.end_user is not None:
        call.release, call.allowed = apply_key_rules(call.rules, call.body, call.meter, gateway.router,
                                                     gateway.spend.hold_seconds, gateway.auth.keys)


def cache_plan(gateway, call):
    """What the call may do with the cache, and the cached answer on a hit."""
    if gateway.cache is not None:
        body = call.body
        call.plan = gateway.cache.plan(call.endpoint, body, gateway.router.resolve(body.get("model")), call.stream,
                                       call.rules)
        call.cached = call.plan.lookup() if call.plan is not None else None


def budget_hold(gateway, call):
    """Hold the call's worst case against every budget it must fit: its key's, its user's, team's,
    organization's and end user's (cache misses only)."""
    if call.cached is None and call.meter.budgeted:
        call.meter.reserve(gateway.router.reachable(call.body, call.allowed))


def route(gateway, call):
    """The answer (a dict, or a ChunkStream): the cached one on a hit, else the router's."""
    meter = call.meter
    if call.cached is not None:
        call.outcome = Outcome(group=gateway.router.resolve(call.body.get("model")))
        meter.cache_hit = True
        # A hit does no I/O that would yield: let the worker's other connections have a turn, or
        # a client pipelining hits could hold the worker for seconds.
        let_others_run()
        return replay(call.cached) if call.stream else call.cached
    meter.begin()  # a cache miss: journaled before its upstream work (no-op when already)
    try:
        call.outcome, answer = gateway.router.call(call.endpoint, call.body, call.stream, call.allowed,
                                                   cap_output=meter.hold > 0)
    except BaseException as exc:
        if call.release:
            call.release()
        meter.fail(exc, getattr(exc, "outcome", None))
        _close_quietly(meter)
        gateway.observers.tell(meter)
        raise
    return answer


def answer_headers(call):
    """What happened (outcome_headers), and the cache's verdict when the call was planned."""
    headers = outcome_headers(call.outcome)
    if call.plan is not None:
        headers[HIT_HEADER] = "HIT" if call.cached is not None else "MISS"
        headers[KEY_HEADER] = call.plan.digest
    return headers


def render_stream(gateway, call, stream, headers):
    """The stream as SSE, its taps (cache recorder, meter) on; the row written and the observers told
    after the last byte."""
    meter = call.meter
    if call.plan is not None and call.cached is None:
        stream = call.plan.tap(stream)
    if call.conversation is not None:
        stream = call.conversation.watch(stream)
    stream = meter.watch(call.outcome, stream, call.client_usage)
    events = (_named_sse if call.endpoint in NAMED_EVENTS else _sse)(stream, call.request_id, call.endpoint)
    if call.cached is not None:
        # A replay waits on nothing: send it in one write rather than one per chunk.
        events = [b"".join(events)]
    response = Response(events, headers={**SSE_HEADERS, **headers}, mimetype="text/event-stream")
    # The generator's finally closes the stream; a response closed before its first chunk
    # never runs that generator, so the close is registered here too (close is idempotent).
    response.call_on_close(stream.close)
    if call.release:
        response.call_on_close(call.release)
    response.call_on_close(partial(_close_quietly, meter))  # the row, then the observers
    return tell_when_sent(gateway, response, meter)


def render_answer(gateway, call, answer, headers):
    """The answer as JSON, billed and its row written before it goes out (the cost header is the
    row's cost), stored in the cache; the observers told once it has been sent."""
    meter = call.meter
    if call.release:
        call.release()
    try:
        if call.conversation is not None:
            call.conversation.keep(answer)  # stored before it goes out
        payload, failure = orjson.dumps(answer), None
    except errors.GatewayError as exc:  # it could not be stored: its tokens were spent, billed as an error
        payload, failure = None, exc
    except (orjson.JSONEncodeError, TypeError):
        # An answer that cannot be passed on (nested past orjson's 255 levels): the upstream's
        # fault, a 502; its tokens were spent, so the row keeps their cost, as an error.
        payload, failure = None, errors.UpstreamError(
            "The upstream's answer could not be passed on: it is not valid JSON for a client "
            "(nested too deeply).", code="upstream_invalid_answer")
    headers[COST_HEADER] = f"{meter.settle(call.outcome, answer, failure):.10g}"
    if failure is not None:
        gateway.observers.tell(meter)
        raise failure
    if call.plan is not None and call.cached is None:
        call.plan.store(answer)
    text = answer.get(TEXT_BODY) if call.endpoint in AUDIO_UPLOADS else None
    if text is not None:  # a transcript asked for as text, srt or vtt
        return tell_when_sent(gateway, Response(text[1], headers=headers, mimetype=text[0]), meter)
    return tell_when_sent(gateway, Response(payload, headers=headers, mimetype="application/json"), meter)


def render_bytes(gateway, call, stream, headers):
    """Speech: the audio's bytes as the upstream sends them, never buffered whole; billed by the
    characters spoken once the stream ends, however it ends (a client that hangs up closes the
    upstream connection)."""
    meter = call.meter
    stream = meter.watch(call.outcome, stream, True)

    def chunks():
        try:
            yield from stream
        except Exception:  # noqa: BLE001  (headers are out: the log keeps it, the body just ends)
            log.warning("request %s: speech stream ended early", call.request_id, exc_info=True)
        finally:
            stream.close()
    response = Response(chunks(), headers=headers, mimetype=stream.media_type or "application/octet-stream")
    response.call_on_close(stream.close)
    if call.release:
        response.call_on_close(call.release)
    response.call_on_close(partial(_close_quietly, meter))
    return tell_when_sent(gateway, response, meter)


def tell_when_sent(gateway, response, meter):
    """The observers (log line, metrics, callbacks, traces) hear of the call once its last byte has
    gone out; a stream's row is written just before (registered first)."""
    response.call_on_close(partial(gateway.observers.tell, meter))
    return response


def _close_quietly(meter):
    """Write a call's row; a failure to is logged, and hides neither the call's own failure nor the
    observers' record."""
    try:
        meter.close()
    except Exception:  # noqa: BLE001
        log.exception("could not record a call's spend row")


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


def _sse(stream, request_id, _endpoint=None):
    """Encode chunks as SSE; an error after the first byte becomes a final error event. Chunks the
    upstream delivered in one read go out in one write (each write is a syscall and a chunk of
    HTTP framing); a chunk is never held back waiting for the upstream."""
    batch = []
    try:
        for chunk in stream:
            batch.append(encode(chunk))
            if not stream.ready:
                yield b"".join(batch)
                batch = []
        batch.append(DONE_EVENT)
        yield b"".join(batch)
    except errors.GatewayError as exc:
        log.warning("request %s: stream ended by %s: %s", request_id, type(exc).__name__, exc.message)
        batch.append(encode(exc.body()))
        yield b"".join(batch)
    except Exception:  # never a traceback on the wire; the log keeps it
        log.exception("request %s: stream failed", request_id)
        batch.append(encode(errors.GatewayError(f"Internal error while streaming (request id {request_id}).").body()))
        yield b"".join(batch)
    finally:
        stream.close()


def _named_event(event):
    """One event as Anthropic and the Responses API frame them: its type as the SSE event name, then
    its data."""
    kind = event.get("type")
    if not (isinstance(kind, str) and kind.isascii() and kind.replace("_", "").replace(".", "").isalnum()):
        kind = "message"  # an upstream's odd type never shapes the SSE framing
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(event))


def _named_sse(stream, request_id, endpoint):
    """A Messages or Responses stream as named SSE events; an error after the first byte becomes the
    API's documented `error` event."""
    error_event = NAMED_EVENTS[endpoint]
    batch = []
    try:
        for event in stream:
            batch.append(_named_event(event))
            if not stream.ready:  # as _sse: what one upstream read brought, in one write
                yield b"".join(batch)
                batch = []
        if batch:
            yield b"".join(batch)
    except errors.GatewayError as exc:
        log.warning("request %s: stream ended by %s: %s", request_id, type(exc).__name__, exc.message)
        yield b"".join(batch) + _named_event(error_event(exc))
    except Exception:  # never a traceback on the wire; the log keeps it
        log.exception("request %s: stream failed", request_id)
        yield b"".join(batch) + _named_event(error_event(errors.GatewayError(
            f"Internal error while streaming (request id {request_id}).")))
    finally:
        stream.close()


def _responses_error(exc):
    """The Responses API's stream `error` event: its documented fields, and the same nested under
    `error` as the API sends them (the `openai` SDK raises APIError on that one)."""
    detail = {"type": exc.type, "code": exc.code or exc.type, "message": exc.message, "param": exc.param}
    return {"type": "error", "code": detail["code"], "message": exc.message, "param": exc.param, "error": detail}


# Endpoints whose streams are named events, and their error event.
NAMED_EVENTS = {"messages": anthropic_error, "responses": _responses_error}
