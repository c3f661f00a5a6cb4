"""What happened to each call, told once to everyone who listens: the request log line, metrics,
callbacks and tracing.

`CallRecord` is built from a call's meter (gateway/spend/meter.py) once the response has gone out
(the call pipeline registers `Observers.tell` on the response's close, after the row is written);
`Observers.emit` hands it to each observer in turn. An observer must be quick
and must not raise (a failing observer is logged and skipped): slow work (HTTP sinks) belongs on a
background queue of its own. The record lists each upstream attempt (deployment, times, error), so
a tracer can draw one span per attempt after the fact; `begin` hooks run when the call starts, in
the request's context (a tracer captures its parent span there), and their values travel in
`CallRecord.context`.
"""

import logging
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone

log = logging.getLogger("gateway.telemetry.events")


@dataclass
class CallRecord:
    """One call, as observers see it. Never holds a key: only its hash and alias."""

    request_id: str
    endpoint: str  # chat, completions, embeddings
    status: str  # success, error, client_disconnected
    stream: bool
    started: float  # unix time
    ended: float
    model_group: str | None = None
    deployment_id: str | None = None
    provider: str | None = None
    model: str | None = None  # upstream model
    api_base: str | None = None
    key_hash: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    estimated: bool = False
    cache_hit: bool = False
    retries: int = 0
    fallbacks: int = 0
    first_token_seconds: float | None = None  # streams: time to the first chunk
    http_status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    attempts: list = field(default_factory=list)  # [{deployment_id, provider, model, api_base,
    #                                                 started, ended, error}] in order; times unix
    context: dict = field(default_factory=dict, repr=False)  # values of the begin hooks, by name
    request: dict = field(default_factory=dict, repr=False)  # the client's body (message logging)
    response_text: str | None = field(default=None, repr=False)  # the answer's text, when known

    @property
    def latency(self):
        """Seconds from the request to the end of the response."""
        return max(0.0, self.ended - self.started)


class Observers:
    """The per-worker observers: `calls` get each CallRecord, `begins` run as a call starts."""

    def __init__(self):
        self.calls = []  # fn(record)
        self.begins = {}  # name -> fn() -> value kept in record.context[name]
        self.wants_text = False  # an observer logs the answer's text: meters keep it (SpendTracker)

    def add(self, observe, wants_text=False):
        """Tell `observe` of every call; `wants_text`: it logs the answer's text, which meters then keep."""
        self.calls.append(observe)
        self.wants_text = self.wants_text or bool(wants_text)

    @property
    def active(self):
        """Whether anyone listens (records are not built otherwise)."""
        return bool(self.calls)

    def begin(self):
        """Run the begin hooks in the request's context."""
        context = {}
        for name, hook in self.begins.items():
            try:
                context[name] = hook()
            except Exception:  # noqa: BLE001
                log.exception("begin hook %s failed", name)
        return context

    def tell(self, meter):
        """Tell every observer of a finished call (nothing is built when nobody listens)."""
        if self.calls:
            self.emit(record_of(meter))

    def emit(self, record):
        """Tell every call observer; one that raises is logged and skipped."""
        for observer in self.calls:
            try:
                observer(record)
            except Exception:  # noqa: BLE001  (an observer never fails a request)
                log.exception("call observer %r failed", observer)


def record_of(meter):
    """The CallRecord of a finished call's meter (gateway/spend/meter.py Meter), read from its fields."""
    outcome, rules, error = meter.outcome, meter.rules, meter.error
    deployment = outcome.deployment if outcome is not None else None
    provider = deployment.provider if deployment is not None else None
    ended = time.time()
    attempts = [dict(a) for a in outcome.attempts] if outcome is not None else []
    if attempts and attempts[-1]["ended"] is None:
        attempts[-1]["ended"] = ended  # a stream's attempt lasts as long as the stream
    requested = meter.requested
    return CallRecord(
        request_id=meter.request_id, endpoint=meter.endpoint, status=meter.status, stream=meter.stream,
        started=meter.started_unix, ended=ended,
        model_group=outcome.group if outcome else (requested if isinstance(requested, str) else None),
        deployment_id=deployment.id if deployment else None, provider=provider.name if provider else None,
        model=provider.model if provider else None, api_base=provider.api_base if provider else None,
        key_hash=rules.hash if rules else None, key_alias=rules.alias if rules else None,
        user_id=rules.user_id if rules else None, team_id=rules.team_id if rules else None,
        prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens, cost=meter.cost,
        estimated=meter.estimated, cache_hit=meter.cache_hit,
        retries=outcome.retries if outcome else 0, fallbacks=outcome.fallbacks if outcome else 0,
        first_token_seconds=(meter.first_chunk - meter.started_unix) if meter.first_chunk else None,
        http_status=getattr(error, "status", 500) if error is not None else 200,
        error_type=type(error).__name__ if error is not None else None,
        error_message=getattr(error, "message", None) if error is not None else None,
        attempts=attempts, context=meter.context, request=meter.body,
        response_text="".join(meter.texts) if meter.texts is not None else None)


def iso(unix):
    """A unix time as ISO 8601 UTC with milliseconds (how sinks write a record's times)."""
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
