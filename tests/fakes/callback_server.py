"""Fake callback receivers on loopback: Langfuse's ingestion API and a webhook that can fail or hang.

FakeLangfuse speaks POST /api/public/ingestion as Langfuse does: HTTP basic auth with the public and
secret key (401 otherwise), a `{"batch": [...]}` body, and a 207 answer listing `successes` and
`errors` per event (an event whose envelope or body is malformed is an error, the others succeed).
FakeWebhook records JSON POSTs and answers 200; `fail_first = n` answers 500 to the first n posts,
`retry_after` adds that header to those 500s; `hang = True` never answers (until the server stops).
"""

import base64
import re
import threading

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

INGESTION_PATH = "/api/public/ingestion"
EVENT_TYPES = {"trace-create", "generation-create", "span-create", "event-create", "score-create",
               "generation-update", "span-update", "sdk-log"}
LEVELS = {"DEBUG", "DEFAULT", "WARNING", "ERROR"}
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _iso(value):
    return isinstance(value, str) and bool(_ISO.match(value))


def event_problem(event):
    """What is wrong with one ingestion event (None when Langfuse would take it)."""
    if not isinstance(event, dict):
        return "event must be an object"
    if not isinstance(event.get("id"), str) or not event["id"]:
        return "envelope id must be a string"
    if event.get("type") not in EVENT_TYPES:
        return f"unknown event type {event.get('type')!r}"
    if not _iso(event.get("timestamp")):
        return "envelope timestamp must be ISO 8601"
    body = event.get("body")
    if not isinstance(body, dict):
        return "body must be an object"
    if event["type"] == "trace-create":
        if not isinstance(body.get("id"), str):
            return "trace id must be a string"
        if "timestamp" in body and not _iso(body["timestamp"]):
            return "trace timestamp must be ISO 8601"
    if event["type"] == "generation-create":
        if not isinstance(body.get("id"), str) or not isinstance(body.get("traceId"), str):
            return "generation needs id and traceId"
        for name in ("startTime", "endTime", "completionStartTime"):
            if name in body and not _iso(body[name]):
                return f"{name} must be ISO 8601"
        if "level" in body and body["level"] not in LEVELS:
            return f"level must be one of {sorted(LEVELS)}"
        for name in ("usage", "usageDetails"):
            usage = body.get(name)
            if usage is not None and not all(isinstance(usage.get(k), int) for k in ("input", "output")):
                return f"{name}.input/output must be integers"
        cost = body.get("costDetails")
        if cost is not None and not all(isinstance(v, (int, float)) for v in cost.values()):
            return "costDetails values must be numbers"
    return None


class _LangfuseHandler(FakeHandler):
    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        if method != "POST" or path != INGESTION_PATH:
            return self.send_json(404, {"message": "not found"})
        if headers.get("authorization") != fake.expected_auth:
            return self.send_json(401, {"message": "Invalid credentials. Confirm that you've configured the "
                                                   "correct host."})
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            return self.send_json(400, {"message": "Invalid request data", "error": "batch must be a list"})
        successes, errors = [], []
        for event in body["batch"]:
            problem = event_problem(event)
            event_id = event.get("id") if isinstance(event, dict) else None
            if problem:
                errors.append({"id": event_id, "status": 400, "message": "Invalid request data",
                               "error": problem})
            else:
                successes.append({"id": event_id, "status": 201})
                fake.add_event(event)
        self.send_json(207, {"successes": successes, "errors": errors})


class FakeLangfuse(FakeServer):
    """Langfuse's ingestion endpoint; accepted events in `events`, problems answered per event."""

    handler = _LangfuseHandler

    def __init__(self, public_key="pk-lf-fake-public", secret_key="sk-lf-fake-secret-0123", **kw):
        super().__init__(**kw)
        self.public_key, self.secret_key = public_key, secret_key
        self.expected_auth = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.events = []

    def add_event(self, event):
        with self._lock:
            self.events.append(event)

    def reset(self):
        super().reset()
        with self._lock:
            self.events.clear()

    def of_type(self, kind):
        """Accepted events' bodies of one type."""
        with self._lock:
            return [e["body"] for e in self.events if e["type"] == kind]


class _WebhookHandler(FakeHandler):
    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        if fake.hang:
            fake.hung.wait()  # until the server stops
            return
        with fake._lock:
            fake.posts += 1
            failing = fake.posts <= fake.fail_first
        if failing:
            extra = {"Retry-After": str(fake.retry_after)} if fake.retry_after is not None else None
            return self.send_json(500, {"error": "receiver is down"}, headers=extra)
        if isinstance(body, list):
            with fake._lock:
                fake.records.extend(body)
        self.send_json(200, {"ok": True})


class FakeWebhook(FakeServer):
    """A webhook receiver: accepted records (the posted arrays, flattened) in `records`."""

    handler = _WebhookHandler

    def __init__(self, fail_first=0, hang=False, retry_after=None, **kw):
        super().__init__(**kw)
        self.fail_first, self.hang, self.retry_after = fail_first, hang, retry_after
        self.hung = threading.Event()
        self.posts = 0
        self.records = []

    def reset(self):
        super().reset()
        with self._lock:
            self.records.clear()
            self.posts = 0

    def stop(self):
        self.hung.set()
        super().stop()
