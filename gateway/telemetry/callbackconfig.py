"""LiteLLM's `success_callback` / `failure_callback` / `callbacks` keys, validated into SinkSpecs.

Names come from `ALLOWED` only, never an import path; `parse` validates them and each sink's
settings at start-up (settings.from_dict calls it, so a bad entry stops the gateway with exit 2).
Pure configuration: it imports no sink, so the settings loader can call it without importing the
telemetry that runs the sinks (gateway/telemetry/callbacks.py).
"""

import logging
import os
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import urlsplit

from gateway.errors import ConfigError

log = logging.getLogger("gateway.telemetry.callbacks")

KEYS = ("success_callback", "failure_callback", "callbacks")
ALLOWED = ("jsonl", "langfuse", "otel", "webhook")
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
