"""One log line per call, after its response: who, what served it, how it went, what it cost.

Text by default; with `litellm_settings.json_logs: true` every gateway log record, this line
included, is one JSON object per line. Never a key: the key's alias, and only the first 8 characters
of its hash to tell unnamed keys apart.
"""

import logging
import time

import orjson

log = logging.getLogger("gateway.request")


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


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, message, and the record's `fields`."""

    def __init__(self):
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record):
        data = {"time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def fields(record):
    """What the line says about one CallRecord."""
    return {"request_id": record.request_id, "call_type": record.endpoint,
            "key_alias": record.key_alias, "key": record.key_hash[:8] if record.key_hash else None,
            "model_group": record.model_group, "deployment": record.deployment_id, "provider": record.provider,
            "status": record.status, "http_status": record.http_status, "stream": record.stream,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
            "cost": round(record.cost, 10), "estimated": record.estimated, "cache_hit": record.cache_hit,
            "latency_ms": round(record.latency * 1000, 2), "retries": record.retries, "fallbacks": record.fallbacks,
            "error": record.error_type}


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
