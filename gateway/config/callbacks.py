"""litellm_settings' callbacks and callback_settings checked into SinkSpecs (names from a fixed list).

Names are never imported: a name is one of our sinks (ALLOWED), `prometheus` (LiteLLM's metric names
on /metrics), a callback LiteLLM documents that this gateway does not implement (logged once at load
and ignored, so LiteLLM's config files start unchanged), or a LiteLLM custom-callback module path
(`module.instance`: logged once, never loaded). Any other name is logged and ignored too, except one
that looks like a typo of a sink we implement: that stops start-up, since a silently dropped
`langfuse` would lose every call's log.
"""

import difflib
import logging
import os
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import urlsplit

from gateway.config.parse import as_bool
from gateway.config.parse import as_number
from gateway.errors import ConfigError

log = logging.getLogger("gateway.config.callbacks")

KEYS = ("success_callback", "failure_callback", "callbacks")
ALLOWED = ("jsonl", "langfuse", "otel", "webhook")
PROMETHEUS = "prometheus"  # not a sink: renders LiteLLM's metric names on /metrics too
IMPLEMENTED = ALLOWED + (PROMETHEUS,)
# Callback names LiteLLM documents (its custom-logger names and its string callbacks) that this
# gateway does not implement: accepted, logged once, ignored.
LITELLM_NAMES = frozenset({
    "agentops", "aispend", "anthropic_cache_control_hook", "argilla", "arize", "arize_phoenix", "athina",
    "aws_sqs", "azure_sentinel", "azure_storage", "berrispend", "bitbucket", "braintrust", "clickhouse",
    "cloudzero", "custom_callback_api", "datadog", "datadog_llm_observability", "datadog_metrics", "deepeval",
    "dotprompt", "dynamic_rate_limiter", "dynamic_rate_limiter_v3", "dynamodb", "email", "focus", "galileo",
    "gcs_bucket", "gcs_pubsub", "generic", "generic_api", "gitlab", "greenscale", "helicone", "humanloop",
    "lago", "langfuse_otel", "langsmith", "langtrace", "levo", "literalai", "litellm_agent", "lite_debugger",
    "llmonitor", "logfire", "lunary", "mavvrik", "mlflow", "newrelic", "openmeter", "opik", "pagerduty",
    "posthog", "prometheus_system", "promptlayer", "resend_email", "s3", "s3_v2", "sendgrid_email", "sentry",
    "slack", "smtp_email", "supabase", "traceloop", "vantage", "vector_store_pre_call_hook", "wandb",
    "weave_otel", "weights_biases",
})
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
    prometheus: bool = False  # `prometheus` named: /metrics also carries LiteLLM's metric names

    def named(self, name):
        """Whether the config names this sink."""
        return any(spec.name == name for spec in self.sinks)


def _allowed_text():
    return ", ".join(ALLOWED)


def _positive(value, path, integer):
    number = as_number(value, path, above=0, whole=integer)
    if number is None:  # written as null: a sink option has no "unset"
        raise ConfigError(f"{path}: must be a positive {'whole number' if integer else 'number'}")
    return number


def _http_url(value, path):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be an http:// or https:// URL")
    value = value.strip()
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ConfigError(f"{path}: must be an http:// or https:// URL")
    return value


def names(value):
    """A callbacks setting as a list of names (a list, or one comma-separated string)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _typo_of(name):
    """The sink we implement that `name` looks like a typo of, or None."""
    close = difflib.get_close_matches(name.lower(), IMPLEMENTED, n=1, cutoff=0.75)
    return close[0] if close else None


def kind(name):
    """What a callback name is: `ours`, `litellm` (LiteLLM has it, we do not), `module` (a LiteLLM
    custom-callback import path), `typo` (close to one of ours) or `unknown`."""
    if name in IMPLEMENTED:
        return "ours"
    if name in LITELLM_NAMES:
        return "litellm"
    if "." in name and all(part.isidentifier() for part in name.split(".")):
        return "module"
    return "typo" if _typo_of(name) else "unknown"


def _named(litellm):
    """{name: [on_success, on_failure, first path]} for our sinks (and `prometheus`) from the three
    callback keys; other names are skipped (warn_unknown logs them once)."""
    named, problems = {}, []
    for key in KEYS:
        value = names(litellm.get(key))
        if value is None:
            continue
        if not isinstance(value, list):
            problems.append(f"litellm_settings.{key}: must be a list of callback names ({_allowed_text()})")
            continue
        for i, name in enumerate(value):
            path = f"litellm_settings.{key}[{i}]"
            if not isinstance(name, str):
                problems.append(f"{path}: must be a callback name, not {type(name).__name__}")
                continue
            found = kind(name)
            if found == "typo":
                problems.append(f"{path}: unknown callback {name!r}; did you mean {_typo_of(name)!r}? "
                                f"(this gateway's callbacks: {_allowed_text()}, prometheus)")
            if found != "ours":
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


def warn_unknown(litellm):
    """Warn once, at load, about callback names this gateway ignores and callback_settings entries
    for sinks it does not have."""
    litellm = litellm or {}
    seen = set()
    for key in KEYS:
        value = names(litellm.get(key))
        for name in value if isinstance(value, list) else ():
            if not isinstance(name, str) or name in seen:
                continue
            seen.add(name)
            found = kind(name)
            if found == "litellm":
                log.warning("litellm_settings.%s: the LiteLLM callback %r is not implemented in this gateway; "
                            "ignored", key, name)
            elif found == "module":
                log.warning("litellm_settings.%s: %r names a Python module; custom callbacks are never "
                            "imported here; ignored", key, name[:200])
            elif found == "unknown":
                log.warning("litellm_settings.%s: %r is not a callback this gateway or LiteLLM knows; ignored",
                            key, name[:200])
    settings = litellm.get("callback_settings")
    for name in settings if isinstance(settings, dict) else ():
        if name not in ALLOWED:
            log.warning("litellm_settings.callback_settings.%s: not a callback this gateway has (%s); ignored",
                        name, _allowed_text())


def parse(litellm, environ=None, warn=True):
    """Validate the callback keys of `litellm_settings`; ConfigError names the entry at fault."""
    environ = os.environ if environ is None else environ
    litellm = litellm or {}
    named = _named(litellm)
    text = not as_bool(litellm.get("turn_off_message_logging"), "litellm_settings.turn_off_message_logging")
    settings = litellm.get("callback_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError("litellm_settings.callback_settings: must be a mapping of callback name: settings")
    if warn:
        warn_unknown(litellm)
    sinks = []
    for name, (on_success, on_failure, where) in named.items():
        if name == PROMETHEUS:
            continue
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
            message_logging=text and as_bool(raw.get("message_logging"), f"{base}.message_logging", True),
            queue_size=_positive(raw.get("queue_size", QUEUE_SIZE), f"{base}.queue_size", True),
            batch_size=_positive(raw.get("batch_size", batch_size), f"{base}.batch_size", True),
            batch_bytes=batch_bytes,
            timeout=float(_positive(raw.get("timeout", TIMEOUT), f"{base}.timeout", False)),
            max_attempts=_positive(raw.get("max_attempts", MAX_ATTEMPTS), f"{base}.max_attempts", True),
            options=_sink_options(name, raw, where, environ)))
    return CallbackConfig(tuple(sinks), prometheus=PROMETHEUS in named)
