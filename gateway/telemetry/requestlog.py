"""One log line per call, after its response: who, what served it, how it went, what it cost.

Text by default; with `litellm_settings.json_logs: true` every gateway log record, this line
included, is one JSON object per line. Never a key: the key's alias, and only the first 8 characters
of its hash to tell unnamed keys apart. Client text (a model name, an upstream message) can never
start a line of its own or make one huge: `clean` escapes and bounds every message.
"""

import logging
import os
import time

import orjson

log = logging.getLogger("gateway.request")


MESSAGE_LIMIT = 16384  # characters of one log message (a --debug curl command included)
FIELD_LIMIT = 256  # characters of one client-chosen field of the request line (model name, alias)


def clean(text, limit=MESSAGE_LIMIT, escape=True):
    """Text made safe for a log line: cut to `limit` characters (saying how many were cut) and, with
    `escape`, every character that is not printable (line breaks, escapes, U+2028) written as a
    Python escape, so client text can neither forge a line nor make one megabytes long."""
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text) - limit} more characters]"
    if escape and not text.isprintable():  # the common case costs one C-level scan
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text


def gunicorn_records(record):
    """A filter for gunicorn's error log: its format prints the process id, which the gateway spares
    every other record from looking up (logging.logProcesses); and its messages carry client text
    (an invalid request line), made as safe as ours."""
    if record.process is None:
        record.process = os.getpid()
    try:
        record.msg, record.args = clean(record.getMessage()), None
    except Exception:  # noqa: BLE001  (a record logging cannot format: leave it to logging's report)
        pass
    return True


class _Seconds:
    """A strftime of the current second, made once per second rather than once per line."""

    def __init__(self, fmt, convert):
        self.fmt, self.convert = fmt, convert
        self.second, self.text = None, ""

    def __call__(self, created):
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.fmt, self.convert(second))
        return self.text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, the time as logging's default (local, `,mmm`) made cheaply."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._seconds = _Seconds("%Y-%m-%d %H:%M:%S", time.localtime)

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record):  # noqa: N802 (logging's name)
        record.message = clean(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, message, and the record's `fields`."""

    def __init__(self):
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record):
        data = {"time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name,
                "message": clean(record.getMessage(), escape=False)}  # JSON escapes; only bound it
        fields = getattr(record, "fields", None)
        if fields:
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def fields(record):
    """What the line says about one CallRecord."""
    return {"request_id": record.request_id, "call_type": record.endpoint,
            "key_alias": _bounded(record.key_alias), "key": record.key_hash[:8] if record.key_hash else None,
            "model_group": _bounded(record.model_group), "deployment": record.deployment_id, "provider": record.provider,
            "status": record.status, "http_status": record.http_status, "stream": record.stream,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
            "cost": round(record.cost, 10), "estimated": record.estimated, "cache_hit": record.cache_hit,
            "latency_ms": round(record.latency * 1000, 2), "retries": record.retries, "fallbacks": record.fallbacks,
            "error": record.error_type}


def _bounded(text):
    """A client-chosen name cut to FIELD_LIMIT characters (a 2 MB model name is a 404, not a 2 MB line)."""
    return clean(text, FIELD_LIMIT, escape=False) if isinstance(text, str) and len(text) > FIELD_LIMIT else text


def observe(record):
    """The call observer: one INFO line (skipped when INFO is off for gateway.request)."""
    if not log.isEnabledFor(logging.INFO):
        return
    f = fields(record)
    log.info("%s %s %s -> %s %s %d tokens=%d+%d cost=$%.6g latency=%.1fms cache=%s key=%s%s",
             f["request_id"], f["call_type"], f["model_group"], f["deployment"] or "-", f["status"],
             f["http_status"], f["prompt_tokens"], f["completion_tokens"], f["cost"], f["latency_ms"],
             "hit" if f["cache_hit"] else "miss", f["key_alias"] or f["key"] or "-",
             f" error={f['error']}" if f["error"] else "", extra={"fields": f})
