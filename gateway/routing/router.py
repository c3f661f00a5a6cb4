"""Model groups and the call loop: name resolution, retries with backoff, timeouts and fallbacks."""

import json
import logging
import random
import time
import weakref
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

import gevent

from gateway import errors
from gateway import providers
from gateway.routing.balancer import Deployment
from gateway.routing.balancer import Group
from gateway.routing.patterns import ALL_MODELS
from gateway.routing.patterns import Pattern
from gateway.routing.patterns import Reach
from gateway.routing.patterns import fill
from gateway.routing.patterns import is_pattern
from gateway.routing.patterns import servable
from gateway.routing.patterns import specificity
from gateway.data import estimate_tokens
from gateway.providers import adapt
from gateway.providers.shapes import encode_embedding
from gateway.config import sections
from gateway.config.parse import fallback_map
from gateway.errors import ConfigError
from gateway.data import DEFAULT_OUTPUT_BOUND
from gateway.data import output_is_assumed
from gateway.routing.state import build_state
from gateway.wire.upstream import CallContext
from gateway.wire.stream import ChunkStream
from gateway.providers import messages
from gateway.providers import responses
from gateway.providers.openai import OPENAI_API_BASE

log = logging.getLogger("gateway.routing.router")

BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
MAX_CONCRETE_GROUPS = 4096  # names served by wildcards whose groups are kept (then made again)
SECRET_PARAMS = ("api_key", "aws_secret_access_key", "aws_session_token", "vertex_credentials")


def _template_secrets(config):
    """The credentials of a wildcard deployment (None: it cannot be served). One whose provider its
    model fixes (`openai/*`) is built once with a stand-in name, so a bad provider or parameter fails
    at load as an exact one does; `*` alone takes the provider from each requested name."""
    if config.model.split("/", 1)[0] == "*":
        return [v for k, v in config.params.items() if k in SECRET_PARAMS and isinstance(v, str) and v]
    try:
        provider = providers.build(replace(config, params={**config.params, "model": fill(config.model, ["x"] * 8)}))
    except providers.UnsupportedProviderError as exc:
        log.warning("%s; this deployment is not served", exc)
        return None
    return list(provider.secrets)


@dataclass
class Outcome:
    """What happened to one call, for response headers and logs."""

    group: str
    deployment: Deployment | None = None
    retries: int = 0
    fallbacks: int = 0
    started: float = field(default_factory=time.monotonic)
    upstream_seconds: float = 0.0
    attempts: list = field(default_factory=list)  # one dict per upstream attempt (gateway/telemetry/events.py)
    answered: str | None = None  # the group that answered (a fallback's), when it did

    @property
    def served_group(self):
        """The group whose deployment answered (else the one asked for): what headers and the spend
        row name; metrics and traces count a call under the group it asked for (`group`)."""
        return self.answered or self.group


def _fingerprint(config):
    """What makes a deployment the same one across a reload: its group, parameters and info, and the
    place in the file of a file's deployment (two equal entries are two deployments)."""
    place = None if (config.model_info or {}).get("db_model") else config.index
    return json.dumps([config.model_name, config.params, config.model_info, place], sort_keys=True, default=str)


def _mocked(provider, body):
    """Whether the call is answered by a mock_response (the body's or the deployment's)."""
    return body.get("mock_response") is not None or provider.mock_response is not None


def _retryable(error):
    """429, 5xx, timeouts and connection failures are worth another try; other 4xx are not."""
    return isinstance(error, (errors.UpstreamError, errors.RateLimitError, errors.ServiceUnavailableError))


class Router:
    """Maps requested model names to deployment groups and runs calls against them."""

    def __init__(self, settings, transport):
        self.settings = settings
        self.transport = transport
        routing = settings.router  # checked at load (gateway/config/sections.py)
        self.num_retries = routing.num_retries
        self.max_retries = routing.max_retries
        self.max_fallbacks = routing.max_fallbacks
        self.max_request_timeout = routing.max_request_timeout
        self.timeout = routing.timeout or settings.request_timeout
        self.stream_timeout = routing.stream_timeout
        self.fallbacks = routing.fallbacks
        self.cw_fallbacks = routing.context_window_fallbacks
        self.default_fallbacks = list(routing.default_fallbacks)
        self.state = build_state(routing)
        self._no_responses = weakref.WeakSet()  # OpenAI-compatible deployments found without /responses
        self._install(self._build_groups(settings.deployments))

    def _build_groups(self, configs, reuse=None):
        """What a deployment list serves: {groups (exact names), patterns (wildcard names, most
        specific first, each with its deployments' configs), access_groups, secrets}. `reuse` maps a
        config's fingerprint to the Deployment already serving it, kept as it is (its cooldowns and
        limits live in the shared state under its id either way). A file's entry naming an unknown
        provider is skipped with a warning; a database model that no longer builds (it was checked
        when it was added) is skipped with a warning too, never failing the reload."""
        built, templates, members, secrets = {}, {}, {}, []
        for config in configs:
            db_model = bool((config.model_info or {}).get("db_model"))
            try:
                sections.deployment_routing(config.index, config.model_name, config.params, config.model_info)
            except ConfigError as exc:
                if not db_model:
                    raise
                log.warning("database model %s is not served: %s", config.model_info.get("id"), exc)
                continue
            for access_group in (config.model_info or {}).get("access_groups") or ():
                members.setdefault(access_group, set()).add(config.model_name)
            if is_pattern(config.model_name):
                found = _template_secrets(config)
                if found is not None:
                    templates.setdefault(config.model_name, []).append(config)
                    secrets.extend(found)
                continue
            deployment = reuse.pop(_fingerprint(config), None) if reuse else None
            if deployment is None:
                try:
                    deployment = Deployment(providers.build(config))
                except providers.UnsupportedProviderError as exc:
                    log.warning("%s; this deployment is not served", exc)
                    continue
                except ConfigError as exc:
                    if not db_model:
                        raise
                    log.warning("database model %s is not served: %s", config.model_info.get("id"), exc)
                    continue
            built.setdefault(config.model_name, []).append(deployment)
        return {"groups": {name: self._group(name, deps) for name, deps in built.items()},
                "patterns": [(Pattern(name), templates[name]) for name in sorted(templates, key=specificity)],
                "access_groups": {name: frozenset(found) for name, found in members.items()},
                "secrets": secrets}

    def _install(self, built):
        """Serve what `_build_groups` made. No yield between these assignments: every greenlet sees
        the old set or the new one."""
        self.groups, self.patterns = built["groups"], built["patterns"]
        self.names = list(self.groups)
        self.access_groups, self._template_secrets = built["access_groups"], built["secrets"]
        self._concrete = {}  # requested name -> its Group, made from the wildcard that serves it
        self.aliases = {a: g for a, g in self.settings.group_aliases.items()
                        if g in self.groups or self._pattern_for(g) is not None}
        self._allowed = {}  # a key's models -> the groups it may reach (allowed_groups)

    def reload(self, configs):
        """Serve `configs` (the file's deployments and the database's) from now on: deployments whose
        config did not change are kept; the groups are swapped in one step (no call sees half)."""
        reuse = {_fingerprint(d.provider.config): d for d in self.deployments()}
        self._install(self._build_groups(configs, reuse))

    def _group(self, name, deployments):
        routing = self.settings.router
        return Group(name, deployments, routing.routing_strategy, self.state, routing.cooldown_time,
                     routing.allowed_fails)

    def _pattern_for(self, name):
        """(Pattern, configs, segments) of the most specific wildcard serving `name`, or None."""
        if not self.patterns or not servable(name):
            return None
        for pattern, configs in self.patterns:
            segments = pattern.segments(name)
            if segments is not None:
                return pattern, configs, segments
        return None

    def group(self, name):
        """The Group serving a resolved name: an exact group, or the concrete group a wildcard makes
        for it (made once, then cached; the cache is bounded). KeyError when nothing serves it."""
        found = self.groups.get(name) or self._concrete.get(name)
        if found is not None:
            return found
        matched = self._pattern_for(name)
        if matched is None:
            raise KeyError(name)
        pattern, configs, segments = matched
        deployments, problems = [], []
        for config in configs:
            concrete = replace(config, params={**config.params, "model": fill(config.model, segments)})
            try:
                provider = providers.build(concrete)
            except ConfigError as exc:
                problems.append(str(exc).split(": ", 1)[-1])
                continue
            deployments.append(Deployment(provider, ident=config.id))
        if not deployments:
            raise errors.NotFoundError(f"The model `{name[:200]}` cannot be served by `{pattern.name}`: "
                                       f"{problems[0]}", param="model", code="model_not_found")
        found = self._group(name, deployments)
        found.pattern = pattern.name
        if len(self._concrete) >= MAX_CONCRETE_GROUPS:
            self._concrete.clear()
        self._concrete[name] = found
        return found

    def _serves(self, name):
        """Whether a group name is served here (exact, or by a wildcard)."""
        return name in self.groups or self._pattern_for(name) is not None

    def pattern_of(self, name):
        """The wildcard model_name serving `name` (None for an exact group or a name nothing serves)."""
        if name in self.groups:
            return None
        found = self._concrete.get(name)
        if found is not None:
            return found.pattern
        matched = self._pattern_for(name)
        return matched[0].name if matched is not None else None

    def allowed_groups(self, models):
        """What a caller limited to `models` may reach (None: every group), as a container of group
        names (patterns/Reach): the names it holds, the groups those names alias, the members of the
        access groups it names, names matching the patterns it holds. Fallbacks and aliases never widen it."""
        if models is None:
            return None
        found = self._allowed.get(models)
        if found is None:
            if any(m in ALL_MODELS for m in models):
                found = None
            else:
                # An access group holds groups: a wildcard group in it reaches the names that
                # wildcard serves (not those a more specific one takes); a pattern the caller
                # holds itself reaches every name it matches.
                members = set().union(*(self.access_groups.get(m, ()) for m in models))
                names = set(models) | {self.aliases[m] for m in models if m in self.aliases}
                found = Reach(names | {m for m in members if not is_pattern(m)},
                              [m for m in models if is_pattern(m)], [m for m in members if is_pattern(m)],
                              self.pattern_of)
            if len(self._allowed) > 10_000:
                self._allowed.clear()
            self._allowed[models] = found
        return found

    def access_group_members(self, name):
        """The model names (groups and wildcard names) of an access group, or None for a name that is
        not one (for access/levels.py, which combines a key's models with its team's)."""
        return self.access_groups.get(name)

    def secrets(self):
        """The credentials of every deployment (exact and wildcard), for scrubbing what is sent on."""
        return [s for d in self.deployments() for s in getattr(d.provider, "secrets", ())] + self._template_secrets

    def deployments(self):
        """Every deployment of every exact group (a wildcard's are made per name: `group`)."""
        return [d for group in self.groups.values() for d in group.deployments]

    def resolve(self, requested):
        """The group name a request's `model` means (first model when absent); a name a wildcard
        serves is its own group name (`group` makes its group)."""
        if not self.names and not self.patterns:
            raise errors.ServiceUnavailableError("No models are configured on this gateway.", code="no_models")
        if (self.settings.catch_all or not requested) and self.names:
            return self.names[0]
        if not requested:
            raise errors.BadRequestError("`model` is required.", param="model")
        if not isinstance(requested, str):
            raise errors.BadRequestError("`model` must be a string.", param="model")
        if requested in self.groups:
            return requested
        if requested in self.aliases:
            return self.aliases[requested]
        if self.patterns and (requested in self._concrete or self._pattern_for(requested) is not None):
            return requested
        available = ", ".join(self.names + sorted(self.aliases) + [p.name for p, _ in self.patterns])
        raise errors.NotFoundError(
            f"The model `{requested[:200]}` does not exist on this gateway. Available models: {available}",
            param="model", code="model_not_found")

    def _request_controls(self, body):
        """Per-request num_retries / timeout / fallbacks (LiteLLM's body keys), bounded by config."""
        retries = body.get("num_retries", self.num_retries)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise errors.BadRequestError("`num_retries` must be a non-negative integer.", param="num_retries")
        timeout = body.get("request_timeout", body.get("timeout"))
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise errors.BadRequestError("`request_timeout` must be a positive number of seconds.",
                                         param="request_timeout")
        per_request = {}
        for key in ("fallbacks", "context_window_fallbacks"):
            value = body.get(key)
            if value is None:
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                per_request[key] = value  # a plain list applies to whichever group was asked
            else:
                try:
                    per_request[key] = fallback_map(value, key)
                except ConfigError as exc:
                    raise errors.BadRequestError(str(exc), param=key) from None
        return min(retries, self.max_retries), (min(float(timeout), self.max_request_timeout)
                                                 if timeout is not None else None), per_request

    def _chain(self, name, table, per_request_value, allowed=None):
        """The fallback group names for `name`: per-request list/map first, then config; groups
        the caller may not use (`allowed`) are skipped."""
        if isinstance(per_request_value, list):
            names = per_request_value
        elif isinstance(per_request_value, dict) and name in per_request_value:
            names = per_request_value[name]
        else:
            names = table.get(name) or (self.default_fallbacks if table is self.fallbacks else [])
        chain = []
        for n in names:
            group = self.aliases.get(n, n)
            if group != name and group not in chain and self._serves(group) and (
                    allowed is None or group in allowed):
                chain.append(group)
        return chain[:self.max_fallbacks]

    def reachable(self, body, allowed=None):
        """Every deployment a call may reach: its group's and its fallback groups' (for budget holds)."""
        name = self.resolve(body.get("model"))
        _retries, _timeout, per_request = self._request_controls(body)
        names, i = [name], 0
        while i < len(names):  # fallbacks of fallbacks too, as call() may follow them
            for table, key in ((self.fallbacks, "fallbacks"), (self.cw_fallbacks, "context_window_fallbacks")):
                names += [n for n in self._chain(names[i], table, per_request.get(key), allowed)
                          if n not in names]
            i += 1
        return [d for n in names for d in self.group(n).deployments]

    def call(self, endpoint, body, stream, allowed=None, cap_output=False):
        """Run one call with retries and fallbacks: (Outcome, answer dict or ChunkStream).

        `allowed`: the groups the caller may reach (fallbacks outside it are skipped); `cap_output`:
        a budgeted call, whose hold assumed DEFAULT_OUTPUT_BOUND where nothing bounds the output, so
        that bound is sent as `max_tokens` to such deployments."""
        name = self.resolve(body.get("model"))
        retries, timeout, per_request = self._request_controls(body)
        outcome = Outcome(group=name)
        deadline = time.monotonic() + (timeout or self.timeout)
        queue, seen, last_error = [name], {name}, None
        context_chain_used = False
        while queue:
            group_name = queue.pop(0)
            try:
                answer = self._call_group(group_name, endpoint, body, stream, retries, timeout, deadline,
                                          outcome, cap_output)
                outcome.answered = group_name  # the group that answered, for headers and the spend row
                return outcome, answer
            except errors.ContextWindowExceededError as exc:
                last_error = exc
                if context_chain_used:
                    continue
                context_chain_used = True
                chain = self._chain(group_name, self.cw_fallbacks, per_request.get("context_window_fallbacks"),
                                    allowed)
            except errors.GatewayError as exc:
                last_error = exc
                if not (_retryable(exc) or exc.upstream_status in (401, 403, 404)):
                    exc.outcome = outcome  # what was tried, for the call's record (spend row, traces)
                    raise
                chain = self._chain(group_name, self.fallbacks, per_request.get("fallbacks"), allowed)
            for fallback in chain:
                if fallback not in seen and len(seen) <= self.max_fallbacks:
                    seen.add(fallback)
                    queue.append(fallback)
            if queue:
                outcome.fallbacks += 1
                log.info("falling back from %s to %s after %s", group_name, queue[0], type(last_error).__name__)
        last_error.outcome = outcome  # what was tried, for the call's record (spend row, traces)
        raise last_error

    def _call_group(self, name, endpoint, body, stream, retries, timeout, deadline, outcome, cap_output=False):
        """Try one group up to 1 + retries times, possibly on different deployments."""
        group = self.group(name)
        fits = self._check_context(group, body)
        tried = []
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.UpstreamTimeoutError(f"No answer for `{name}` within the request timeout.")
            deployment = group.choose(exclude=tried, fits=fits)
            tried.append(deployment.id)
            outcome.deployment = deployment
            provider = deployment.provider
            record = {"deployment_id": deployment.id, "group": name, "provider": provider.name,
                      "model": provider.model, "api_base": provider.api_base, "started": time.time(),
                      "ended": None, "error": None}
            outcome.attempts.append(record)
            started = time.monotonic()
            group.started(deployment)
            try:
                sent = body
                if cap_output and endpoint != "embeddings" and output_is_assumed(deployment, body):
                    sent = {**body, "max_tokens": DEFAULT_OUTPUT_BOUND}
                answer = self._attempt(deployment, name, endpoint, sent, stream, timeout, remaining)
            except errors.GatewayError as exc:
                record["ended"], record["error"] = time.time(), type(exc).__name__
                group.finished(deployment, error=exc)
                if not _retryable(exc) or attempt == retries:
                    raise
                outcome.retries += 1
                wait = self._backoff(attempt, exc, deadline)
                log.info("retrying %s after %s (attempt %d of %d, waiting %.2fs)", name, type(exc).__name__,
                         attempt + 2, retries + 1, wait)
                gevent.sleep(wait)
                continue
            except BaseException as exc:
                record["ended"], record["error"] = time.time(), type(exc).__name__
                group.finished(deployment, error=errors.UpstreamError("call aborted"))
                raise
            outcome.upstream_seconds = time.monotonic() - started
            if stream:
                return self._watch_stream(group, deployment, answer, started)  # ends with the stream
            record["ended"] = time.time()
            group.finished(deployment, seconds=outcome.upstream_seconds,
                           tokens=(answer.get("usage") or {}).get("total_tokens") if group.tracks_usage else None)
            return answer
        raise AssertionError("unreachable")

    def _backoff(self, attempt, error, deadline):
        """Exponential backoff with full jitter; an upstream Retry-After wins when it is sooner than the deadline."""
        wait = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt))
        retry_after = (error.headers or {}).get("Retry-After")
        try:
            if retry_after is not None:
                wait = max(wait, float(retry_after))
        except ValueError:
            pass
        return max(0.0, min(wait, deadline - time.monotonic() - 0.05))

    def _check_context(self, group, body):
        """A filter of the group's deployments whose known context window fits the prompt;
        refuses before any call (or rpm admission) when none does."""
        if not group.windows_known:
            return None  # no known window: no work on the hot path
        tokens = estimate_tokens(body)

        def fits(deployment):
            return not deployment.max_input_tokens or tokens <= deployment.max_input_tokens
        if not any(fits(d) for d in group.deployments):
            largest = max(group.deployments, key=lambda d: d.max_input_tokens)
            raise errors.ContextWindowExceededError(
                f"The prompt (about {tokens} tokens) exceeds the context window of "
                f"`{largest.provider.config.model}` ({largest.max_input_tokens} tokens).", param="messages")
        return fits

    def _attempt(self, deployment, name, endpoint, body, stream, timeout, remaining):
        """One call to one deployment; for streams, the first chunk is read here so a failure
        before any byte reaches the client can still be retried."""
        provider = deployment.provider
        limit = min(timeout or provider.timeout or self.timeout, remaining)
        answer = self.run(provider, name, endpoint, body, stream, limit)
        if stream:
            try:
                answer.prime()
            except BaseException:
                answer.close()
                raise
        return answer

    def _watch_stream(self, group, deployment, stream, started):
        """Settle the group's bookkeeping when the stream is closed, however it ends."""
        usage = {}
        if group.tracks_usage:  # the usage the balancer counts (usage-based routing)
            def count(chunk):
                if chunk.get("usage"):
                    usage.update(chunk["usage"])
                return chunk
            stream.tap(count)

        def settle():
            group.finished(deployment, seconds=time.monotonic() - started,
                           tokens=usage.get("total_tokens") if group.tracks_usage else None)
        return stream.at_close(settle)

    def run(self, provider, name, endpoint, body, stream, timeout=None):
        """Capability checks and shared adaptation around the provider's serve() (its execute(), or a mock answer)."""
        settings = self.settings
        if not provider.supports(endpoint, stream):
            what = "streaming" if stream and provider.supports(endpoint, False) else endpoint
            raise errors.BadRequestError(f"Model `{name}` ({provider.name}) does not support {what}.",
                                         param="stream" if what == "streaming" else "model",
                                         code="unsupported_endpoint")
        if endpoint == "completions" and not provider.native_completions:
            answer = self.run(provider, name, "chat", adapt.completion_to_chat(body), stream, timeout)
            return answer.map(adapt.chat_chunk_to_completion) if stream else adapt.chat_to_completion(answer)
        if endpoint in ("messages", "count_tokens"):
            native = provider.native_messages if endpoint == "messages" else provider.native_count_tokens
            if not native or _mocked(provider, body):
                return self._run_messages(provider, name, endpoint, body, stream, timeout)
        if endpoint == "responses":
            if not provider.native_responses or _mocked(provider, body) or provider in self._no_responses:
                return self._run_responses(provider, name, body, stream, timeout)
            try:
                return self._serve(provider, endpoint, body, stream, timeout)
            except errors.NotFoundError as exc:
                if provider.api_base == OPENAI_API_BASE or exc.upstream_status != 404:
                    raise
                # An OpenAI-compatible server without /responses: through chat, now and from now on.
                log.info("%s has no /responses: the Responses API goes through chat", provider.label)
                self._no_responses.add(provider)
                return self._run_responses(provider, name, body, stream, timeout)
        legacy_functions = False
        if endpoint == "chat":
            legacy_functions = bool(body.get("functions")) and provider.supported_params is not None
            adapt.check_images(provider, body)
            body = adapt.prepare_tools(provider, body, settings)
        if endpoint in ("chat", "completions", "embeddings"):
            body = adapt.check_params(provider, endpoint, body, settings.drop_params)
        answer = self._serve(provider, endpoint, body, stream, timeout)
        if stream:
            return answer.map(adapt.tool_chunk_to_function_call) if legacy_functions else answer
        if endpoint == "embeddings" and not provider.native_encoding and body.get("encoding_format"):
            for item in answer.get("data") or []:
                item["embedding"] = encode_embedding(item["embedding"], body["encoding_format"])
        if legacy_functions:
            answer = adapt.tools_to_function_call(answer)
        return answer

    def _serve(self, provider, endpoint, body, stream, timeout):
        """The provider's serve() with the call's timeouts."""
        limit = timeout or provider.timeout or self.timeout
        stream_timeout = provider.config.params.get("stream_timeout") or self.stream_timeout
        if stream and stream_timeout:
            # between chunks; never longer than what is left of the call's own timeout
            limit = min(float(stream_timeout), timeout) if timeout else float(stream_timeout)
        ctx = CallContext(self.transport, limit, self.settings.drop_params)
        return provider.serve(ctx, endpoint, body, stream)

    def _run_messages(self, provider, name, endpoint, body, stream, timeout):
        """Anthropic's Messages API on a deployment without it (or a mock answer): through chat, its
        answer or stream translated back (providers/messages.py); count_tokens is the gateway's
        estimate of the translated prompt."""
        chat = messages.to_chat(body, provider, stream)
        if endpoint == "count_tokens":
            return {"input_tokens": estimate_tokens(chat)}
        answer = self.run(provider, name, "chat", chat, stream, timeout)
        model = body.get("model")
        if not stream:
            return messages.from_chat(answer, model)
        return ChunkStream(provider, "messages", messages.events_from_chunks(answer, model), on_close=answer.close,
                           backlog=answer.backlog)

    def _run_responses(self, provider, name, body, stream, timeout):
        """OpenAI's Responses API on a deployment without it (or a mock answer): through chat, the
        answer or stream translated back (providers/responses.py); the pipeline sets the final id."""
        answer = self.run(provider, name, "chat", responses.to_chat(body, provider, stream), stream, timeout)
        response_id = responses.new_id("resp")
        if not stream:
            return responses.from_chat(answer, body, response_id)
        events = responses.events_from_chunks(answer, body, response_id)
        return ChunkStream(provider, "responses", events, on_close=answer.close, backlog=answer.backlog)
