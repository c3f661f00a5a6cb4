"""OpenTelemetry tracing: a span per request and a child span per upstream attempt, exported by OTLP.

On when `general_settings.otel: true` or `litellm_settings.callbacks` lists "otel" (`install` is
idempotent, so the callbacks module may call it too). Where spans go comes from the environment:

* `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (the base:
  `/v1/traces` is appended for HTTP), else LiteLLM's `OTEL_ENDPOINT`, else localhost:4318 / 4317;
* `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`, or LiteLLM's `OTEL_EXPORTER`):
  `http/protobuf` (default), `grpc` (needs opentelemetry-exporter-otlp-proto-grpc), `console`;
* `OTEL_EXPORTER_OTLP_HEADERS` (or `..._TRACES_HEADERS`, or LiteLLM's `OTEL_HEADERS`): `k=v,k2=v2`;
* `OTEL_SERVICE_NAME` (default "gateway"), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*` as usual.

Design. Each worker builds its own TracerProvider inside `create_app` (after gunicorn's fork), with a
BatchSpanProcessor: spans are queued in memory and exported by the processor's own (under gevent,
cooperative) thread, never on a request's path; a collector that is down or hangs costs the requests
nothing, and when the queue is full spans are dropped. The request span is opentelemetry-
instrumentation-flask's (W3C `traceparent` from the client is honoured). A begin hook captures its
span context when a call starts; the call observer (gateway/events.py), which runs after the response
has gone out, draws one CLIENT span per upstream attempt with the attempt's own start and end times,
carrying GenAI semantic-convention attributes. Prompt and answer text are attached unless
`litellm_settings.turn_off_message_logging` is true (LiteLLM's default: messages are logged). Spans
never carry a key or a key hash: only the key's alias; query strings are scrubbed of key-like values.

Nothing here imports opentelemetry until `install` runs, so a gateway without tracing never loads it.
"""

import logging
import os
from urllib.parse import parse_qsl
from urllib.parse import quote
from urllib.parse import unquote
from urllib.parse import urlencode
from urllib.parse import urlsplit

import orjson

from gateway.infra.coop import cooperative
from gateway.infra.redact import has_key_like
from gateway.infra.redact import redact
from gateway.infra.redact import sensitive_name

log = logging.getLogger("gateway.telemetry.otel")

EXTENSION = "gateway.telemetry.otel"  # app.extensions key of the installed Tracing
HOOK = "otel"  # name of the begin hook; its value (the request span's context) is in record.context
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
DEFAULT_EXCLUDED_URLS = "/health/liveliness,/health/readiness,/metrics$"
HTTP_TRACES_PATH = "/v1/traces"
GRPC_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"
PROTOCOLS = {"http/protobuf": "http/protobuf", "http": "http/protobuf", "otlp_http": "http/protobuf",
             "grpc": "grpc", "otlp_grpc": "grpc", "console": "console"}
REDACTED = "REDACTED"
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")


class TracingUnavailable(Exception):
    """Tracing was asked for but cannot run (the message says what to install or set)."""


# -- configuration (pure) -------------------------------------------------------------------------

def wanted(settings):
    """Whether the config turns tracing on: general_settings.otel, or "otel" in litellm_settings.callbacks."""
    return settings.general.otel or "otel" in settings.litellm.callback_names


def logs_messages(settings):
    """Prompt and answer text go into spans unless turn_off_message_logging is true (LiteLLM's rule)."""
    return not settings.litellm.turn_off_message_logging


def parse_headers(text):
    """`k=v,k2=v2` (values URL-encoded, as the OTLP spec says) as a dict; malformed items are skipped."""
    headers = {}
    for item in (text or "").split(","):
        name, sep, value = item.partition("=")
        name = unquote(name).strip()
        if sep and name:
            headers[name] = unquote(value).strip()
    return headers


def exporter_settings(environ=None):
    """(protocol, endpoint, headers) from the environment; TracingUnavailable for an unknown protocol."""
    env = os.environ if environ is None else environ

    def first(*names):
        for name in names:
            value = (env.get(name) or "").strip()
            if value:
                return value
        return None

    raw = first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER")
    protocol = PROTOCOLS.get((raw or "http/protobuf").lower())
    if protocol is None:
        raise TracingUnavailable(f"OTEL_EXPORTER_OTLP_PROTOCOL={raw!r} is not supported; use http/protobuf "
                                 "or grpc")
    headers = parse_headers(first("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_HEADERS"))
    exact = first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = first("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_ENDPOINT")
    if protocol == "console":
        return protocol, None, headers
    if protocol == "grpc":
        return protocol, exact or base or "http://localhost:4317", headers
    if exact:
        return protocol, exact, headers
    base = (base or "http://localhost:4318").rstrip("/")
    if not base.endswith(HTTP_TRACES_PATH):
        base += HTTP_TRACES_PATH
    return protocol, base, headers


# -- attributes (pure) ----------------------------------------------------------------------------

def scrub_url(url):
    """A URL (or a path with its query) with key-like strings and sensitive query values REDACTED."""
    path, sep, query = url.partition("?")
    return redact(path, mark=REDACTED) + sep + scrub_query(query)


def scrub_query(query):
    """Query parameters named like secrets, or holding key-like values, with their values REDACTED."""
    if not query:
        return query
    pairs = [(name, REDACTED if sensitive_name(name) or has_key_like(value) else value)
             for name, value in parse_qsl(query, keep_blank_values=True)]
    return urlencode(pairs, quote_via=quote, safe="")


def _server(api_base):
    """(server.address, server.port) of an upstream base URL."""
    if not api_base:
        return None, None
    try:
        parts = urlsplit(api_base if "//" in api_base else f"//{api_base}")
        return parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None, None


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def prompt_text(request, endpoint):
    """The client's prompt as one string: chat messages as JSON, a completion prompt, embedding input."""
    if not isinstance(request, dict):
        return None
    value = request.get({"chat": "messages", "completions": "prompt", "embeddings": "input"}.get(endpoint, ""))
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def call_attributes(record):
    """What every span of a call carries: operation, request id, routing counts, the key's alias."""
    attrs = {"gen_ai.operation.name": OPERATIONS.get(record.endpoint, record.endpoint),
             "gateway.request_id": record.request_id,
             "gateway.retries": record.retries,
             "gateway.fallbacks": record.fallbacks,
             "gateway.cache_hit": bool(record.cache_hit),
             "gateway.stream": bool(record.stream)}
    if record.key_alias:
        attrs["gateway.key_alias"] = record.key_alias
    body = record.request if isinstance(record.request, dict) else {}
    max_tokens = _number(body.get("max_completion_tokens")) or _number(body.get("max_tokens"))
    for name, value in (("gen_ai.request.max_tokens", max_tokens),
                        ("gen_ai.request.temperature", _number(body.get("temperature"))),
                        ("gen_ai.request.top_p", _number(body.get("top_p")))):
        if value is not None:
            attrs[name] = value
    return attrs


def outcome_attributes(record, log_messages, answered=True):
    """What the call's last span carries: usage, cost, status, and (message logging) the text."""
    attrs = {"gateway.status": record.status, "gateway.cost_usd": float(record.cost or 0.0)}
    if answered:
        attrs["gen_ai.usage.input_tokens"] = int(record.prompt_tokens or 0)
        if record.endpoint != "embeddings":
            attrs["gen_ai.usage.output_tokens"] = int(record.completion_tokens or 0)
        if record.estimated:
            attrs["gateway.usage_estimated"] = True
        if record.first_token_seconds is not None:
            attrs["gateway.time_to_first_token_s"] = float(record.first_token_seconds)
    if log_messages:
        prompt = prompt_text(record.request, record.endpoint)
        if prompt is not None:
            attrs["gen_ai.prompt"] = prompt
        if record.response_text is not None:
            attrs["gen_ai.completion"] = record.response_text
    return attrs


def span_plans(record, log_messages):
    """The spans of one call, as dicts: name, start/end (unix seconds), attributes, error (or None).

    One per upstream attempt; a call answered without any (a cache hit) gets one span of its own.
    """
    common = call_attributes(record)
    operation = common["gen_ai.operation.name"]
    attempts = record.attempts or []
    plans = []
    for index, attempt in enumerate(attempts):
        final = index == len(attempts) - 1
        group = attempt.get("group") or record.model_group
        attrs = dict(common)
        attrs["gateway.attempt"] = index + 1
        for name, value in (("gen_ai.system", attempt.get("provider")), ("gen_ai.request.model", group),
                            ("gateway.deployment_id", attempt.get("deployment_id")),
                            ("gateway.upstream_model", attempt.get("model"))):
            if value:
                attrs[name] = value
        host, port = _server(attempt.get("api_base"))
        if host:
            attrs["server.address"] = host
            if port:
                attrs["server.port"] = port
        error = attempt.get("error")
        if final and error is None and record.status == "error":
            error = record.error_type or "error"  # failed after the attempt answered (mid-stream)
            answered = True
        else:
            answered = error is None
        if error is not None:
            attrs["error.type"] = error
        if final:
            if answered and attempt.get("model"):
                attrs["gen_ai.response.model"] = attempt["model"]
            attrs.update(outcome_attributes(record, log_messages, answered))
        description = None
        if error is not None:
            description = (record.error_message if final and record.error_message else error)[:500]
        started = attempt.get("started") or record.started
        ended = attempt.get("ended") or record.ended
        plans.append({"name": f"{operation} {group}" if group else operation, "start": started,
                      "end": max(started, ended), "attributes": attrs, "error": error,
                      "description": description})
    if not attempts and record.cache_hit:
        attrs = dict(common)
        if record.model_group:
            attrs["gen_ai.request.model"] = record.model_group
        attrs.update(outcome_attributes(record, log_messages))
        plans.append({"name": f"{operation} {record.model_group or ''}".strip() + " (cache)",
                      "start": record.started, "end": max(record.started, record.ended),
                      "attributes": attrs, "error": None, "description": None})
    return plans


def _ns(seconds):
    return int(seconds * 1_000_000_000)


# -- the SDK side ---------------------------------------------------------------------------------

class Tracing:
    """One worker's tracer: the begin hook, the call observer, the request span's hooks."""

    def __init__(self, provider, log_messages, description):
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace import Status
        from opentelemetry.trace import StatusCode
        self.provider = provider
        self.log_messages = log_messages
        self.description = description
        self.tracer = provider.get_tracer("gateway")
        self._trace = trace
        self._non_recording = NonRecordingSpan
        self._client = SpanKind.CLIENT
        self._internal = SpanKind.INTERNAL
        self._error = lambda text: Status(StatusCode.ERROR, text)

    def begin(self):
        """In the request's context as the call starts: the request span's context (the parent)."""
        context = self._trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    def on_response(self, span, status, response_headers):
        """The Flask span, as the response starts: the request id, and query strings scrubbed."""
        if span is None or not span.is_recording():
            return
        for name, value in response_headers:
            if name.lower() == "x-request-id":
                span.set_attribute("gateway.request_id", value)
                break
        attributes = getattr(span, "attributes", None) or {}
        for key in _URL_ATTRIBUTES + ("url.path",):
            value = attributes.get(key)
            if isinstance(value, str) and value:
                clean = scrub_url(value)
                if clean != value:
                    span.set_attribute(key, clean)
        query = attributes.get("url.query")
        if isinstance(query, str) and query:
            span.set_attribute("url.query", scrub_query(query))

    def observe(self, record):
        """After the response: one span per upstream attempt, children of the request span."""
        plans = span_plans(record, self.log_messages)
        if not plans:
            return
        from opentelemetry.context import Context
        parent = record.context.get(HOOK)
        if parent is not None:
            context = self._trace.set_span_in_context(self._non_recording(parent), Context())
        else:  # no request span (an excluded route): one call span holds the attempts together
            call = self.tracer.start_span(f"gateway {record.endpoint}", context=Context(), kind=self._internal,
                                          start_time=_ns(record.started),
                                          attributes=call_attributes(record))
            call.end(end_time=_ns(max(record.started, record.ended)))
            context = self._trace.set_span_in_context(call, Context())
        for plan in plans:
            span = self.tracer.start_span(plan["name"], context=context, kind=self._client,
                                          start_time=_ns(plan["start"]), attributes=plan["attributes"])
            if plan["error"] is not None:
                span.set_status(self._error(plan["description"]))
            span.end(end_time=_ns(plan["end"]))


def build_exporter(protocol, endpoint, headers):
    """The span exporter; TracingUnavailable when the protocol's package is missing."""
    if protocol == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                f"OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package {GRPC_PACKAGE} ({exc}); install it "
                f"with `pip install {GRPC_PACKAGE}`, or use http/protobuf") from exc
        _cooperative_grpc()
        return OTLPSpanExporter(endpoint=endpoint, headers=headers or None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=endpoint, headers=headers or None)


def _cooperative_grpc():
    """grpc's C core blocks the whole gevent worker unless told to cooperate."""
    try:
        if not cooperative():
            return
        from grpc.experimental import gevent as grpc_gevent
        grpc_gevent.init_gevent()
    except Exception:  # noqa: BLE001  (an old grpc without it still exports, less politely)
        log.warning("otel: could not make grpc cooperative under gevent", exc_info=True)


def build_provider(exporter):
    """A TracerProvider for this worker, exporting in batches off the request path."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gateway import __version__
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "gateway",
                                "service.version": __version__, "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # other instrumentation in this worker joins the same traces
    return provider


def install(app, gateway=None, exporter=None):
    """Trace this app (idempotent): request spans, attempt spans, OTLP export. Returns the Tracing,
    or None when tracing cannot run (logged as an error; the gateway serves on without it)."""
    if EXTENSION in app.extensions:
        return app.extensions[EXTENSION]
    gateway = gateway if gateway is not None else app.extensions["gateway"]
    try:
        if exporter is None:
            protocol, endpoint, headers = exporter_settings()
            exporter = build_exporter(protocol, endpoint, headers)
            description = f"{endpoint} ({protocol})" if endpoint else protocol
        else:
            description = type(exporter).__name__
    except TracingUnavailable as exc:
        log.error("otel: tracing is OFF: %s", exc)
        app.extensions[EXTENSION] = None
        return None
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    settings = gateway.settings
    tracing = Tracing(build_provider(exporter), logs_messages(settings), description)
    excluded = None
    if not (os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")):
        excluded = DEFAULT_EXCLUDED_URLS
    FlaskInstrumentor.instrument_app(app, tracer_provider=tracing.provider, excluded_urls=excluded,
                                     response_hook=tracing.on_response, enable_commenter=False)
    # The request span starts before the gateway's own hook (request id, auth), so refused calls
    # (401, 403) get their span too.
    hooks = app.before_request_funcs.setdefault(None, [])
    if getattr(app, "_before_request", None) in hooks:
        hooks.insert(0, hooks.pop(hooks.index(app._before_request)))
    gateway.observers.begins[HOOK] = tracing.begin
    gateway.observers.add(tracing.observe, wants_text=tracing.log_messages)
    app.extensions[EXTENSION] = tracing
    log.info("otel: tracing to %s as service %s; prompt and answer text %s", description,
             os.environ.get("OTEL_SERVICE_NAME") or "gateway",
             "included" if tracing.log_messages else "left out (turn_off_message_logging)")
    return tracing
