"""LiteLLM's `success_callback` / `failure_callback` / `callbacks`, from a fixed list of sinks.

Names come from `ALLOWED` only, never an import path; `parse` validates them and each sink's
settings at start-up (settings.from_dict calls it, so a bad entry stops the gateway with exit 2).
Each call's record is turned into bytes by the observer (in the request, after its response) and put
on the bounded queue of each sink it goes to (gateway/sinks.py: one sender per sink and worker,
batches, retries, flush at exit), so a slow, hanging or failing sink costs a request nothing.
Payloads carry the key's alias, never a key or its hash; known secrets are scrubbed besides.
"""

import logging
import os
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from urllib.parse import urlsplit

from gateway.config.settings import ConfigError
from gateway.infra.redact import scrubber
from gateway.telemetry.sinks import EXIT_FLUSH_SECONDS
from gateway.telemetry.sinks import SINKS
from gateway.telemetry.sinks import Delivery
from gateway.telemetry.sinks import dumps

log = logging.getLogger("gateway.telemetry.callbacks")

KEYS = ("success_callback", "failure_callback", "callbacks")
ALLOWED = ("jsonl", "langfuse", "otel", "webhook")
FAILED = frozenset({"error", "client_disconnected"})
LANGFUSE_CLOUD = "https://cloud.langfuse.com"

# Per sink: (option names, default batch size, batch byte cap). Common options come on top.
_SINK_OPTIONS = {
    # Langfuse takes <= 3.5 MB a batch; its events carry the call's text twice (trace and generation)
    "langfuse": ({"public_key", "secret_key", "host"}, 50, 1_500_000),
    "webhook": ({"url", "headers"}, 50, 2_000_000),
    "jsonl": ({"path"}, 200, 4_000_000),
}
_COMMON_OPTIONS = {"message_logging", "queue_size", "batch_size", "timeout", "max_attempts"}
QUEUE_SIZE = 10_000  # events per sink and worker
TIMEOUT = 5.0  # seconds per delivery attempt
MAX_ATTEMPTS = 3
# Body keys that name an upstream or carry credentials: never part of a payload.
_SECRET_BODY_KEYS = frozenset({"api_key", "api_base", "base_url", "api_version", "azure_ad_token",
                               "organization", "headers", "extra_headers", "vertex_credentials",
                               "litellm_logging_obj", "proxy_server_request", "user_api_key"})
_TEXT_BODY_KEYS = ("messages", "prompt", "input", "suffix")


# -- configuration -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SinkSpec:
    """One named sink, validated: where its events go and which calls it hears of."""

    name: str
    on_success: bool
    on_failure: bool
    where: str  # the config path that first named it (for messages)
    message_logging: bool = True
    queue_size: int = QUEUE_SIZE
    batch_size: int = 50
    batch_bytes: int = 2_000_000
    timeout: float = TIMEOUT
    max_attempts: int = MAX_ATTEMPTS
    options: dict = field(default_factory=dict)  # the sink's own: url, headers, path, keys, host


@dataclass(frozen=True)
class CallbackConfig:
    """Every sink the config names, in the order first named."""

    sinks: tuple = ()

    def named(self, name):
        """Whether the config names this sink."""
        return any(spec.name == name for spec in self.sinks)


def _allowed_text():
    return ", ".join(ALLOWED)


def _positive(value, path, integer):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ConfigError(f"{path}: must be a positive {'whole number' if integer else 'number'}")
    return value


def _bool(value, path):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{path}: must be true or false")


def _http_url(value, path):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be an http:// or https:// URL")
    value = value.strip()
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ConfigError(f"{path}: must be an http:// or https:// URL")
    return value


def _named(litellm):
    """{name: [on_success, on_failure, first path]} from the three callback keys."""
    named, problems = {}, []
    for key in KEYS:
        value = litellm.get(key)
        if value is None:
            continue
        if isinstance(value, str):  # one name, or several separated by commas
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            problems.append(f"litellm_settings.{key}: must be a list of callback names ({_allowed_text()})")
            continue
        for i, name in enumerate(value):
            path = f"litellm_settings.{key}[{i}]"
            if not isinstance(name, str) or name not in ALLOWED:
                shown = repr(name) if isinstance(name, str) else type(name).__name__
                problems.append(f"{path}: unknown callback {shown}; allowed: {_allowed_text()} (callbacks "
                                "are chosen from this list, never imported from a module path)")
                continue
            entry = named.setdefault(name, [False, False, path])
            entry[0] |= key in ("success_callback", "callbacks")
            entry[1] |= key in ("failure_callback", "callbacks")
    if problems:
        raise ConfigError("\n".join(problems))
    return named


def _sink_options(name, raw, where, environ):
    """The sink's own settings, from callback_settings.<name> or its environment variables."""
    base = f"litellm_settings.callback_settings.{name}"
    if name == "langfuse":
        public = raw.get("public_key") or environ.get("LANGFUSE_PUBLIC_KEY")
        secret = raw.get("secret_key") or environ.get("LANGFUSE_SECRET_KEY")
        if not isinstance(public, str) or not public or not isinstance(secret, str) or not secret:
            raise ConfigError(f"{where}: langfuse needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (or "
                              f"{base}.public_key / secret_key)")
        host = raw.get("host") or environ.get("LANGFUSE_HOST") or LANGFUSE_CLOUD
        host = _http_url(host, f"{base}.host" if raw.get("host") else "LANGFUSE_HOST")
        return {"public_key": public, "secret_key": secret, "host": host.rstrip("/")}
    if name == "webhook":
        url = raw.get("url") or environ.get("GATEWAY_WEBHOOK_URL")
        if not url:
            raise ConfigError(f"{where}: webhook needs {base}.url (or GATEWAY_WEBHOOK_URL)")
        url = _http_url(url, f"{base}.url" if raw.get("url") else "GATEWAY_WEBHOOK_URL")
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError(f"{base}.headers: must be a mapping of header name: text")
        return {"url": url, "headers": dict(headers)}
    if name == "jsonl":
        path = raw.get("path") or environ.get("GATEWAY_CALLBACK_JSONL")
        if not path or not isinstance(path, str):
            raise ConfigError(f"{where}: jsonl needs {base}.path (or GATEWAY_CALLBACK_JSONL)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"{base}.path: folder {folder} does not exist")
        return {"path": path}
    return {}


def parse(litellm, environ=None, warn=True):
    """Validate the callback keys of `litellm_settings`; ConfigError names the entry at fault."""
    environ = os.environ if environ is None else environ
    litellm = litellm or {}
    named = _named(litellm)
    text = not _bool(litellm.get("turn_off_message_logging", False), "litellm_settings.turn_off_message_logging")
    settings = litellm.get("callback_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError("litellm_settings.callback_settings: must be a mapping of callback name: settings")
    for name in settings if warn else ():
        if name not in ALLOWED:
            log.warning("litellm_settings.callback_settings.%s: not a callback this gateway has (%s); ignored",
                        name, _allowed_text())
    sinks = []
    for name, (on_success, on_failure, where) in named.items():
        raw = settings.get(name) or {}
        base = f"litellm_settings.callback_settings.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{base}: must be a mapping of settings")
        if name == "otel":  # gateway/telemetry/otel.py reads its own settings
            sinks.append(SinkSpec(name, on_success, on_failure, where, options=dict(raw)))
            continue
        own, batch_size, batch_bytes = _SINK_OPTIONS[name]
        for key in raw:
            if key not in own | _COMMON_OPTIONS:
                raise ConfigError(f"{base}.{key}: unknown setting; known: "
                                  f"{', '.join(sorted(own | _COMMON_OPTIONS))}")
        sinks.append(SinkSpec(
            name, on_success, on_failure, where,
            message_logging=text and _bool(raw.get("message_logging", True), f"{base}.message_logging"),
            queue_size=_positive(raw.get("queue_size", QUEUE_SIZE), f"{base}.queue_size", True),
            batch_size=_positive(raw.get("batch_size", batch_size), f"{base}.batch_size", True),
            batch_bytes=batch_bytes,
            timeout=float(_positive(raw.get("timeout", TIMEOUT), f"{base}.timeout", False)),
            max_attempts=_positive(raw.get("max_attempts", MAX_ATTEMPTS), f"{base}.max_attempts", True),
            options=_sink_options(name, raw, where, environ)))
    return CallbackConfig(tuple(sinks))


# -- what a sink receives ----------------------------------------------------------------------------

def iso(unix):
    """A unix time as ISO 8601 UTC with milliseconds."""
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean_body(body, text):
    """The client's body without anything naming an upstream or a credential (and without the
    message text unless it is logged)."""
    from gateway.spend.meter import AddedUsageOption
    out = {}
    for key, value in (body or {}).items():
        if key in _SECRET_BODY_KEYS or key.startswith("aws_") or (not text and key in _TEXT_BODY_KEYS):
            continue
        if isinstance(value, AddedUsageOption):  # the gateway's own addition, not the client's
            continue
        out[key] = value
    return out


def call_event(record, text):
    """The call as the webhook and jsonl sinks send it: the CallRecord's facts, the key's alias
    (never the key or its hash), the request and, when `text`, the answer's text."""
    request = _clean_body(record.request, text)
    metadata = request.get("metadata")
    return {
        "request_id": record.request_id, "call_type": record.endpoint, "status": record.status,
        "stream": record.stream, "start_time": iso(record.started), "end_time": iso(record.ended),
        "latency_seconds": round(record.latency, 6), "first_token_seconds": record.first_token_seconds,
        "completion_start_time": (iso(record.started + record.first_token_seconds)
                                  if record.first_token_seconds is not None else None),
        "model_group": record.model_group, "deployment_id": record.deployment_id, "provider": record.provider,
        "model": record.model, "api_base": record.api_base, "key_alias": record.key_alias,
        "user_id": record.user_id, "team_id": record.team_id, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens, "cost": record.cost,
        "estimated": record.estimated, "cache_hit": record.cache_hit, "retries": record.retries,
        "fallbacks": record.fallbacks, "http_status": record.http_status, "error_type": record.error_type,
        "error_message": record.error_message,
        "attempts": [{"deployment_id": a.get("deployment_id"), "provider": a.get("provider"),
                      "model": a.get("model"), "api_base": a.get("api_base"),
                      "start_time": iso(a.get("started")), "end_time": iso(a.get("ended")),
                      "error": a.get("error")} for a in record.attempts],
        "metadata": metadata if isinstance(metadata, dict) else None,
        "request": request,
        "response_text": record.response_text if text else None,
    }


# -- wiring ------------------------------------------------------------------------------------------

class Callbacks:
    """The configured sinks of one worker and the observer that feeds them."""

    def __init__(self, config, secrets=()):
        self.config = config
        scrub = scrubber(secrets)
        self.deliveries = [Delivery(SINKS[spec.name](spec), spec, scrub)
                           for spec in config.sinks if spec.name in SINKS]

    @property
    def wants_text(self):
        """Whether a sink logs message text (the answer's text must then be kept)."""
        return any(d.spec.message_logging for d in self.deliveries)

    def observe(self, record):
        """The call observer: serialize the call once (per text variant) and queue the bytes for every
        sink it goes to; each sink builds its own payload in its sender."""
        failed = record.status in FAILED
        encoded = {}
        for delivery in self.deliveries:
            spec = delivery.spec
            if not (spec.on_failure if failed else spec.on_success):
                continue
            text = spec.message_logging
            if text not in encoded:
                encoded[text] = dumps(call_event(record, text))
            delivery.put(encoded[text])

    def wait_idle(self, timeout=10.0):
        """Wait until every sink has sent what it has (tests)."""
        deadline = time.monotonic() + timeout
        return all(d.wait_idle(max(0.0, deadline - time.monotonic())) for d in self.deliveries)

    def close(self, seconds=EXIT_FLUSH_SECONDS):
        """Stop every sender after delivering what is left (tests; workers use flush_all at exit)."""
        deadline = time.monotonic() + seconds
        for delivery in self.deliveries:
            if delivery._pid == os.getpid():
                delivery.flush(deadline)


def install(app, gateway):
    """Wire the configured callbacks into one worker's app; returns the Callbacks (None without any)."""
    config = parse(gateway.settings.litellm_settings, warn=False)  # settings warned at start-up
    if not config.sinks:
        return None
    secrets = [gateway.settings.master_key]
    for deployment in gateway.router.deployments():
        secrets.extend(getattr(deployment.provider, "secrets", ()))
    callbacks = Callbacks(config, secrets)
    if callbacks.deliveries:
        gateway.observers.calls.append(callbacks.observe)
        if callbacks.wants_text:
            gateway.spend.keep_text = True
    app.extensions["gateway_callbacks"] = callbacks
    if config.named("otel"):
        try:
            from gateway.telemetry import otel
        except ImportError as exc:
            if exc.name != "gateway.telemetry.otel":
                raise
            log.warning("the otel callback needs gateway/telemetry/otel.py, which this build does not have; ignored")
        else:
            otel.install(app, gateway)
    return callbacks
