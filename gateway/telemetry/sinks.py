"""Callback sinks and their delivery: a bounded queue and one sender thread per sink and worker.

`Delivery.put` runs in the request (after its response): it appends bytes to a bounded queue and
wakes the sender; when the queue is full the oldest events are dropped and counted. The sender (a
greenlet under gevent, started on the first event, so after gunicorn's fork) sends batches with
retries and jittered exponential backoff (`Retry-After` honoured), within short timeouts, so a slow,
hanging or failing sink never slows or fails a request. `flush_all` runs at worker exit: what is
left gets one attempt per batch within a few seconds. Sinks: Langfuse's ingestion API, a webhook
(a JSON array of call events per POST) and a JSONL file.
"""

import atexit
import base64
import collections
import fcntl
import logging
import os
import random
import threading
import time
import weakref
from urllib.parse import urlsplit

import orjson

from gateway.infra.redact import scrubber  # noqa: F401  (re-exported: the sinks' redaction)

log = logging.getLogger("gateway.telemetry.callbacks")

QUEUE_BYTES = 32 * 1024 * 1024  # per sink and worker, besides the configured count
CONNECT_TIMEOUT = 3.0
BACKOFF = 0.5  # seconds before the first retry, doubled each time, jittered
BACKOFF_CAP = 10.0
EXIT_FLUSH_SECONDS = 2.0  # at most this long spent delivering at worker exit
WARN_EVERY = 60.0  # a failing sink is logged at most once a minute


def dumps(obj):
    """JSON bytes; values orjson refuses (integers past 64 bits) are written as text."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        import json
        return json.dumps(obj, default=str).encode()


class Retry(Exception):
    """This attempt failed; a later one may succeed."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class GiveUp(Exception):
    """The sink refused the batch for good (a 4xx answer): no retry."""


# -- sinks -------------------------------------------------------------------------------------------

class HttpSink:
    """POSTs a batch to one URL through a small pool of its own (a wire Transport, opened in the
    sender), so its socket errors are mapped where every upstream's are."""

    def __init__(self, spec):
        self.spec = spec
        self._transport = None

    def post(self, url, body, headers, timeout):
        """One POST; Retry on connection errors, timeouts, 408, 429 and 5xx; GiveUp on other answers
        outside 2xx. Returns the response."""
        from gateway import errors  # the HTTP stack loads with the first POST (this module loads with settings)
        from gateway.wire.transport import Transport
        if self._transport is None:
            self._transport = Transport(num_pools=2, pool_size=2, connect_timeout=CONNECT_TIMEOUT)
        try:
            resp = self._transport.request("POST", url, body, headers, timeout=timeout, label=self.label)
        except errors.GatewayError as exc:  # the I/O failed: named by its socket/urllib3 error
            raise Retry(type(exc.__cause__).__name__) from None
        if resp.status in (408, 429) or resp.status >= 500:
            raise Retry(f"HTTP {resp.status}", _retry_after(resp.headers.get("retry-after")))
        if not 200 <= resp.status < 300:
            raise GiveUp(f"HTTP {resp.status}")
        return resp


def _retry_after(value):
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def where(url):
    """A URL as logs may show it: scheme, host and port (a path or query may hold a token)."""
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc.rpartition('@')[2]}"


class WebhookSink(HttpSink):
    """A JSON array of call events, POSTed to the configured URL."""

    def __init__(self, spec):
        super().__init__(spec)
        self.url = spec.options["url"]
        self.headers = {**spec.options.get("headers", {}), "Content-Type": "application/json"}
        self.label = where(self.url)

    def deliver(self, items, timeout):
        """POST the batch of call events as one JSON array."""
        self.post(self.url, b"[" + b",".join(items) + b"]", self.headers, timeout)


class JsonlSink:
    """One JSON line per call appended to a file (locked, so workers never interleave lines)."""

    def __init__(self, spec):
        self.spec = spec
        self.path = spec.options["path"]
        self.label = self.path

    def deliver(self, items, timeout):
        """Append the batch, a call event a line, in one locked write (O_APPEND; created 0600)."""
        data = b"\n".join(items) + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise Retry(f"cannot open: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Retry("file is locked") from None
                    time.sleep(0.005)  # cooperative under gevent
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise Retry(f"cannot write: {exc.strerror}") from None
        finally:
            os.close(fd)  # releases the lock


class LangfuseSink(HttpSink):
    """Langfuse's public ingestion API: a trace-create and a generation-create event per call."""

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.url = opts["host"] + "/api/public/ingestion"
        token = base64.b64encode(f"{opts['public_key']}:{opts['secret_key']}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.label = where(self.url)
        self._rejected_logged = False
        from gateway.telemetry.langfuse import ingestion_events
        self._events = ingestion_events

    def deliver(self, items, timeout):
        """POST `{"batch": [...]}` (built here, off the request path, from the call events); events
        Langfuse rejects in its 207 answer are logged, not retried."""
        batch = [envelope for item in items for envelope in self._events(orjson.loads(item))]
        resp = self.post(self.url, dumps({"batch": batch}), self.headers, timeout)
        try:  # 207: per-event successes and errors; input errors are never retried
            answer = orjson.loads(resp.data or b"{}")
        except orjson.JSONDecodeError:
            return
        rejected = answer.get("errors") if isinstance(answer, dict) else None
        if rejected and not self._rejected_logged:
            self._rejected_logged = True
            first = rejected[0] if isinstance(rejected[0], dict) else {}
            log.warning("callback langfuse (%s): %d event(s) of a batch were rejected, e.g. status %s: %s %s "
                        "(logged once)", self.label, len(rejected), first.get("status"),
                        str(first.get("message") or "")[:200], str(first.get("error") or "")[:300])


SINKS = {"langfuse": LangfuseSink, "webhook": WebhookSink, "jsonl": JsonlSink}


# -- delivery ----------------------------------------------------------------------------------------

_LIVE = weakref.WeakSet()  # deliveries started in this process, flushed at exit
_START_LOCK = threading.Lock()


class Delivery:
    """One sink's bounded queue and its sender thread (started lazily in the worker that uses it)."""

    def __init__(self, sink, spec, scrub=None):
        self.sink = sink
        self.spec = spec
        self.name = spec.name
        self.scrub = scrub or (lambda item: item)
        self.queue_bytes = QUEUE_BYTES
        self._queue = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._pid = None
        self._busy = 0
        self.queued = self.delivered = self.dropped = self.failed = 0
        self._drop_logged = False
        self._warned_at = None
        self._unwarned = 0

    # the request side: quick, never raises on a full queue
    def put(self, item):
        """Queue one event's bytes; when full, the oldest event is dropped (counted, logged once)."""
        if self._pid != os.getpid():
            self._start()
        dropped = 0
        with self._lock:
            self._queue.append(item)
            self._bytes += len(item)
            self.queued += 1
            while len(self._queue) > 1 and (len(self._queue) > self.spec.queue_size
                                            or self._bytes > self.queue_bytes):
                self._bytes -= len(self._queue.popleft())
                dropped += 1
            self.dropped += dropped
        if dropped and not self._drop_logged:
            self._drop_logged = True
            log.warning("callback %s (%s): its queue is full (%d events); dropping the oldest events "
                        "(logged once; see the count at exit)", self.name, self.sink.label, self.spec.queue_size)
        self._wake.set()

    def _start(self):
        with _START_LOCK:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._wake, self._stop = threading.Event(), threading.Event()
            self._thread = threading.Thread(target=self._run, name=f"callback-{self.name}", daemon=True)
            self._thread.start()
            _LIVE.add(self)

    # the sender side
    def _take(self):
        """The next batch: up to batch_size events and the sink's byte cap (at least one)."""
        batch, size = [], 0
        with self._lock:
            while self._queue and len(batch) < self.spec.batch_size:
                item = self._queue[0]
                if batch and size + len(item) > self.spec.batch_bytes:
                    break
                self._queue.popleft()
                self._bytes -= len(item)
                batch.append(item)
                size += len(item)
            self._busy += bool(batch)
        return batch

    def _putback(self, batch):
        with self._lock:
            self._queue.extendleft(reversed(batch))
            self._bytes += sum(len(i) for i in batch)

    def _run(self):
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            while not self._stop.is_set():
                batch = self._take()
                if not batch:
                    break
                try:
                    self._send(batch)
                except Exception:  # noqa: BLE001  (the sender never dies)
                    log.exception("callback %s: unexpected error; %d event(s) lost", self.name, len(batch))
                finally:
                    with self._lock:
                        self._busy -= 1

    def _send(self, batch, attempts=None, deadline=None):
        """Deliver one batch with retries and backoff; False when it was given up."""
        attempts = attempts or self.spec.max_attempts
        items = [self.scrub(item) for item in batch]
        error, made = "no time left", 0
        for attempt in range(attempts):
            timeout = self.spec.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0.05:
                    break
            made += 1
            try:
                self.sink.deliver(items, timeout)
                self.delivered += len(items)
                return True
            except GiveUp as exc:
                error = str(exc)
                break
            except Retry as exc:
                error = str(exc)
                if attempt + 1 >= attempts:
                    break
                wait = min(BACKOFF_CAP, BACKOFF * 2 ** attempt) * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    wait = min(BACKOFF_CAP, max(wait, exc.retry_after))
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if self._stop.wait(wait) and deadline is None:  # the worker is exiting: flush takes over
                    self._putback(batch)
                    return False
        self.failed += len(items)
        self._warn("callback %s (%s): %d event(s) not delivered after %d attempt(s): %s", self.name,
                   self.sink.label, len(items), made, error)
        return False

    def _warn(self, message, *args):
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        if self._unwarned:
            message += f" ({self._unwarned} similar failure(s) since the last warning)"
        self._warned_at, self._unwarned = now, 0
        log.warning(message, *args)

    # shutting down and tests
    def pending(self):
        """Events queued or being sent."""
        with self._lock:
            return len(self._queue) + self._busy

    def wait_idle(self, timeout):
        """Wait until nothing is queued or in flight (tests); True when idle."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def flush(self, deadline):
        """Stop the sender and deliver what is left, one attempt per batch, until `deadline`."""
        self._stop.set()
        self._wake.set()
        while time.monotonic() < deadline:
            try:
                if not self._flush_one(deadline):
                    break
            except (SystemExit, KeyboardInterrupt):
                # gunicorn's worker raises SystemExit once per quit signal; a second one (SIGINT to
                # the process group, then the arbiter's SIGQUIT) can land here, while exiting anyway.
                continue
        _LIVE.discard(self)
        left = self.pending()
        if left or self.dropped or self.failed:
            log.warning("callback %s (%s): at exit %d event(s) delivered, %d dropped (queue full), %d failed, "
                        "%d left undelivered (queued or in flight)", self.name, self.sink.label, self.delivered,
                        self.dropped, self.failed, left)


    def _flush_one(self, deadline):
        """Send the next batch once; False when nothing is left (nor being sent by the sender)."""
        batch = self._take()
        if not batch:
            if not self._busy:
                return False
            time.sleep(0.01)  # the sender is mid-batch: it finishes or puts the batch back
            return True
        try:
            self._send(batch, attempts=1, deadline=deadline)
        except BaseException:
            self._putback(batch)  # interrupted: tried again while time is left
            raise
        finally:
            with self._lock:
                self._busy -= 1
        return True


@atexit.register
def flush_all(seconds=EXIT_FLUSH_SECONDS):
    """Best effort at worker exit: every sink of this process gets what is left of `seconds`."""
    deadline = time.monotonic() + seconds
    for delivery in list(_LIVE):
        if delivery._pid == os.getpid():
            try:
                delivery.flush(deadline)
            except Exception:  # noqa: BLE001
                log.exception("callback %s: flush at exit failed", delivery.name)
