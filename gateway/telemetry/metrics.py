"""Prometheus metrics (`GET /metrics`), exact across the gunicorn workers of one instance.

`Metrics.observe` is a call observer (gateway/events.py): each CallRecord adds to counters and
histograms kept in a `MetricStore`, an mmap'd file on /dev/shm that every worker of the instance maps.
It is named after the gunicorn master's pid beside the router state (`gateway-state-<pid>.sqlite.metrics`,
or `router_settings.local_state_path` + `.metrics`), so `gateway.state.remove_stale_files` drops it
once its instance is gone, and a restarted worker keeps counting where the instance was. Whichever
worker answers a scrape reads the same table, so every scrape shows the instance's totals; the
cooldown gauge is computed at scrape time from the router's groups.

Labels stay low-cardinality and never carry a key: model group (names the client asks for that are
not configured become `(unknown)`), deployment id, provider, endpoint, status, HTTP code, error class.

File layout (little-endian; every offset a multiple of 8):
  header  magic, version, owner stamp (start time of the gunicorn master), end of data, series count
  index   INDEX_SLOTS x (hash of the series key, offset of its record): open addressing, no deletes
  data    records appended in order: u32 key length, u32 value count, the key (JSON
          `[metric name, [label values]]`) padded to 8 bytes, then the values as doubles
The file is a SharedFile (gateway/infra/shm.py). Each process caches series key -> position of its
values, so a call costs one lock around a handful of float additions; the key is only encoded when a
series is new.
Histograms store one count per bucket (not cumulative) and the sum; a scrape adds them up.
"""

import atexit
import bisect
import json
import logging
import math
import os
import struct
import threading
from dataclasses import dataclass

from gateway.infra.shm import PROCESS
from gateway.infra.shm import instance_owner
from gateway.infra.shm import shared_file
from gateway.infra.shm import slot_hash

log = logging.getLogger("gateway.telemetry.metrics")

MAGIC = int.from_bytes(b"GWMETRIC", "little")
VERSION = 1
INDEX_SLOTS = 16384
MAX_SERIES = INDEX_SLOTS * 3 // 4  # keeps probe chains short
OVERFLOW_SERIES = 64  # room kept for one `(overflow)` series per metric once MAX_SERIES is reached
DATA_BYTES = 8 * 1024 * 1024  # tmpfs pages are only used once written
_HEADER = struct.Struct("<QIIQQQ")  # magic, version, pad, owner stamp, end of data, series
_SLOT = struct.Struct("<qQ")  # key hash (0 = empty), record offset
_RECORD = struct.Struct("<II")  # key length, value count
INDEX_START = 64
DATA_START = INDEX_START + INDEX_SLOTS * _SLOT.size
SIZE = DATA_START + DATA_BYTES

UNKNOWN_GROUP = "(unknown)"
OVERFLOW = "(overflow)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Metric:
    """One metric family: name, type, help text, label names and (histograms) bucket bounds."""

    name: str
    kind: str  # counter, histogram, gauge
    help: str
    labels: tuple
    buckets: tuple = ()

    @property
    def size(self):
        """Values a series holds: one, or a histogram's buckets, +Inf and the sum."""
        return len(self.buckets) + 2 if self.kind == "histogram" else 1


WHERE = ("model_group", "deployment", "provider")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Metric("gateway_requests_total", "counter",
                  "Calls answered, by model group, deployment, endpoint, status and HTTP status code.",
                  WHERE + ("endpoint", "status", "code"))
LATENCY = Metric("gateway_request_duration_seconds", "histogram",
                 "Seconds from the request to the end of its response (a stream's last byte).",
                 WHERE, LATENCY_BUCKETS)
FIRST_TOKEN = Metric("gateway_time_to_first_token_seconds", "histogram",
                     "Streams: seconds from the request to the first chunk sent to the client.",
                     WHERE, FIRST_TOKEN_BUCKETS)
PROMPT_TOKENS = Metric("gateway_prompt_tokens_total", "counter", "Prompt tokens billed.", WHERE)
COMPLETION_TOKENS = Metric("gateway_completion_tokens_total", "counter", "Completion tokens billed.", WHERE)
SPEND = Metric("gateway_spend_usd_total", "counter", "Cost of the calls in USD (the ledger's prices).", WHERE)
UPSTREAM_ERRORS = Metric("gateway_upstream_errors_total", "counter",
                         "Failed upstream attempts (retried or not), by the group and deployment tried "
                         "and the error class.", WHERE + ("error_type",))
RETRIES = Metric("gateway_retries_total", "counter", "Retries made for calls to the model group.",
                 ("model_group",))
FALLBACKS = Metric("gateway_fallbacks_total", "counter",
                   "Fallbacks to another group made for calls to the model group.", ("model_group",))
CACHE_HITS = Metric("gateway_cache_hits_total", "counter", "Calls answered from the response cache.",
                    ("model_group",))
CACHE_MISSES = Metric("gateway_cache_misses_total", "counter", "Calls not answered from the response cache.",
                      ("model_group",))
QUARANTINED = Metric("gateway_spend_rows_quarantined_total", "counter",
                     "Spend rows the database refused, kept in the spool dir's quarantine.jsonl.", ())
COOLING = Metric("gateway_deployments_cooling_down", "gauge",
                 "Deployments of the model group in cooldown at scrape time.", ("model_group",))
METRICS = (REQUESTS, LATENCY, FIRST_TOKEN, PROMPT_TOKENS, COMPLETION_TOKENS, SPEND, UPSTREAM_ERRORS,
           RETRIES, FALLBACKS, CACHE_HITS, CACHE_MISSES, QUARANTINED, COOLING)
_BY_NAME = {m.name: m for m in METRICS}


# -- the shared table ------------------------------------------------------------------------------

def _start_time(pid):
    """The process's start time (clock ticks since boot), 0 when unknown: tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _pad(n):
    return (n + 7) & ~7


class _Mapping:
    """One process's view of a metrics file: its SharedFile (whose lock `with mapping:` holds), the
    values as doubles, and the positions of the series this process has seen (shared by every
    store on that path)."""

    def __init__(self, path, stamp):
        self.file = shared_file(path, SIZE)
        self.table = self.file.map
        self.values = memoryview(self.table).cast("d")
        self.positions = {}  # (metric name, label values) -> index of the series' first double
        self.pid = self.file.pid
        with self:
            magic, version, _, found, end, _count = _HEADER.unpack_from(self.table, 0)
            if (magic, version, found) != (MAGIC, VERSION, stamp) or not DATA_START <= end <= SIZE:
                self.table[:DATA_START] = bytes(DATA_START)  # new, foreign or stale: start over
                _HEADER.pack_into(self.table, 0, MAGIC, VERSION, 0, stamp, DATA_START, 0)

    def __enter__(self):
        return self.file.__enter__()

    def __exit__(self, *exc):
        return self.file.__exit__(*exc)


_MAPPINGS = {}  # path -> _Mapping of this process
_MAPPINGS_LOCK = threading.Lock()
_TIDY = set()  # default paths this process removes at exit


class MetricStore:
    """Float counters by series, shared by every process that maps the same file.

    `path=None`: the instance's file on /dev/shm, chosen in the worker on first use and stamped with
    its owner's start time, so a file left by an earlier process with the same pid starts over. An
    explicit path is shared by whoever opens it.
    """

    def __init__(self, path=None):
        self._path = path
        self._stamp = 0
        self._full_warned = False

    @property
    def path(self):
        if self._path is None:
            from gateway.routing.state import default_local_path
            self._path = default_local_path() + ".metrics"
            self._stamp = _start_time(instance_owner())
            if instance_owner() == os.getpid() and self._path not in _TIDY:  # no gunicorn master: tidy up at exit
                _TIDY.add(self._path)
                atexit.register(_unlink_quietly, self._path)
        return self._path

    def _mapping(self):
        """This process's mapping of the file (a forked worker maps it for itself)."""
        path = self.path
        mapping = _MAPPINGS.get(path)
        if mapping is None or mapping.pid != PROCESS["pid"]:
            with _MAPPINGS_LOCK:
                mapping = _MAPPINGS.get(path)
                if mapping is None or mapping.pid != PROCESS["pid"]:
                    mapping = _MAPPINGS[path] = _Mapping(path, self._stamp)
        return mapping

    def add(self, ops):
        """Apply [(series key, value count, value index, amount)] atomically; a series is created
        (zeroed) the first time it is named. Past the table's capacity, new label sets are counted
        in the metric's `(overflow)` series, so totals still add up."""
        mapping = self._mapping()
        values, positions = mapping.values, mapping.positions
        with mapping:
            for key, size, index, amount in ops:
                position = positions.get(key)
                if position is None:
                    position = self._series(mapping.table, key, size)
                    if position is None:
                        position = self._series(mapping.table, _overflow(key), size, MAX_SERIES + OVERFLOW_SERIES)
                        if position is None:
                            continue
                    positions[key] = position
                values[position + index] += amount

    def _series(self, table, key, size, limit=None):
        """The position of the series' values, found or appended (the file lock is held); None
        when the table is full."""
        data = json.dumps([key[0], list(key[1])], ensure_ascii=False, separators=(",", ":")).encode()
        h = slot_hash(data)
        start = h % INDEX_SLOTS
        for step in range(INDEX_SLOTS):
            slot = INDEX_START + ((start + step) % INDEX_SLOTS) * _SLOT.size
            stored, offset = _SLOT.unpack_from(table, slot)
            if stored == 0:
                break
            if stored == h:
                length, _n = _RECORD.unpack_from(table, offset)
                if table[offset + 8:offset + 8 + length] == data:
                    return (offset + 8 + _pad(length)) // 8
        else:
            return self._full()
        magic, version, pad, stamp, end, count = _HEADER.unpack_from(table, 0)
        record = 8 + _pad(len(data)) + 8 * size
        if count >= (limit or MAX_SERIES) or end + record > SIZE:
            return self._full()
        _RECORD.pack_into(table, end, len(data), size)
        table[end + 8:end + record] = data + bytes(record - 8 - len(data))
        # The record counts before the index names it: a process killed in between leaves an
        # unindexed record, which may be appended again later; scrapes add duplicates up.
        _HEADER.pack_into(table, 0, magic, version, pad, stamp, end + record, count + 1)
        _SLOT.pack_into(table, slot, h, end)
        return (end + 8 + _pad(len(data))) // 8

    def _full(self):
        if not self._full_warned:
            self._full_warned = True
            log.warning("the metrics table %s is full: new label sets are counted as `(overflow)`", self.path)
        return None

    def snapshot(self):
        """{(metric name, label values): [values]} for every series any process created."""
        mapping = self._mapping()
        table, values = mapping.table, mapping.values
        raw = []
        with mapping:
            end = _HEADER.unpack_from(table, 0)[4]
            offset = DATA_START
            while offset < end:
                length, size = _RECORD.unpack_from(table, offset)
                first = (offset + 8 + _pad(length)) // 8
                raw.append((table[offset + 8:offset + 8 + length], values[first:first + size].tolist()))
                offset += 8 + _pad(length) + 8 * size
        out = {}
        for data, numbers in raw:
            name, labels = json.loads(data)
            key = (name, tuple(labels))
            if key in out:
                out[key] = [a + b for a, b in zip(out[key], numbers)]
            else:
                out[key] = numbers
        return out


def _overflow(key):
    name, labels = key
    return name, (OVERFLOW,) * len(labels)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# -- the observer and the exposition -----------------------------------------------------------------

_LATENCY_SUM = LATENCY.size - 1
_FIRST_TOKEN_SUM = FIRST_TOKEN.size - 1


class Metrics:
    """The call observer that counts, and the renderer of the text exposition format."""

    def __init__(self, router, store):
        self.router = router
        self.store = store
        self.extra = None  # more families rendered from the same series (LiteLLM's names), or None

    def group(self, name):
        """A label for a group name: configured groups, aliases and wildcard names only (never client
        text: a name a wildcard serves is counted under the wildcard's model_name)."""
        groups = self.router.groups
        if name in groups:
            return name
        if not isinstance(name, str):
            return UNKNOWN_GROUP
        return self.router.aliases.get(name) or self.router.pattern_of(name) or UNKNOWN_GROUP

    def observe(self, record):
        """Count one CallRecord (an observer: gateway/telemetry/events.py)."""
        group = self.group(record.model_group)
        where = (group, record.deployment_id or "", record.provider or "")
        status = record.http_status
        code = str(status) if isinstance(status, int) and 100 <= status <= 599 else "other"
        latency = record.latency
        by_group = (group,)
        ops = [
            ((REQUESTS.name, where + (record.endpoint, record.status, code)), 1, 0, 1.0),
            ((LATENCY.name, where), LATENCY.size, bisect.bisect_left(LATENCY_BUCKETS, latency), 1.0),
            ((LATENCY.name, where), LATENCY.size, _LATENCY_SUM, latency),
            ((CACHE_HITS.name if record.cache_hit else CACHE_MISSES.name, by_group), 1, 0, 1.0),
        ]
        first = record.first_token_seconds
        if record.stream and first is not None:
            first = max(0.0, first)
            ops.append(((FIRST_TOKEN.name, where), FIRST_TOKEN.size,
                        bisect.bisect_left(FIRST_TOKEN_BUCKETS, first), 1.0))
            ops.append(((FIRST_TOKEN.name, where), FIRST_TOKEN.size, _FIRST_TOKEN_SUM, first))
        if record.prompt_tokens:
            ops.append(((PROMPT_TOKENS.name, where), 1, 0, float(record.prompt_tokens)))
        if record.completion_tokens:
            ops.append(((COMPLETION_TOKENS.name, where), 1, 0, float(record.completion_tokens)))
        if record.cost:
            ops.append(((SPEND.name, where), 1, 0, float(record.cost)))
        if record.retries:
            ops.append(((RETRIES.name, by_group), 1, 0, float(record.retries)))
        if record.fallbacks:
            ops.append(((FALLBACKS.name, by_group), 1, 0, float(record.fallbacks)))
        for attempt in record.attempts:
            error = attempt.get("error")
            if error:
                ops.append(((UPSTREAM_ERRORS.name, (self.group(attempt.get("group")),
                                                    attempt.get("deployment_id") or "",
                                                    attempt.get("provider") or "", str(error)[:64])), 1, 0, 1.0))
        self.store.add(ops)

    def quarantined(self, count):
        """Count spend rows the ledger set aside (its `on_quarantine` hook)."""
        self.store.add([((QUARANTINED.name, ()), 1, 0, float(count))])

    def gauges(self):
        """Scrape-time values: {metric name: [(label values, value)]}."""
        cooling = []
        for name, group in self.router.groups.items():
            try:
                cooling.append(((name,), float(len(group.cooling()))))
            except Exception as exc:  # noqa: BLE001  (state unreachable: leave the series out)
                log.warning("could not read the cooldowns of %s: %s", name, type(exc).__name__)
        return {COOLING.name: cooling}

    def render(self):
        """The text exposition format (version 0.0.4) of every series and the scrape-time gauges."""
        series = {}
        for (name, labels), values in self.store.snapshot().items():
            if name in _BY_NAME:
                series.setdefault(name, []).append((labels, values))
        for name, rows in self.gauges().items():
            series.setdefault(name, []).extend((labels, [value]) for labels, value in rows)
        text = render(series)
        if self.extra is not None:
            text += render(self.extra(series), self.extra.metrics)
        return text


def render(series, metrics=METRICS):
    """Text exposition of {metric name: [(label values, values)]} in the order of `metrics`. A
    counter whose name does not end in `_total` is written as `<name>_total`, as prometheus_client
    writes it (LiteLLM's counters are scraped under those names)."""
    lines = []
    for metric in metrics:
        shown = metric.name + "_total" if metric.kind == "counter" and not metric.name.endswith("_total") \
            else metric.name
        lines.append(f"# HELP {shown} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {shown} {metric.kind}")
        for labels, values in sorted(series.get(metric.name, ()), key=lambda row: row[0]):
            pairs = [f'{n}="{_escape(v)}"' for n, v in zip(metric.labels, labels)]
            if metric.kind != "histogram":
                lines.append(f"{shown}{_braces(pairs)} {_number(values[0])}")
                continue
            cumulative = 0.0
            for bound, count in zip(metric.buckets + (math.inf,), values):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{metric.name}_bucket{_braces(pairs + [le])} {_number(cumulative)}")
            lines.append(f"{metric.name}_sum{_braces(pairs)} {_number(values[-1])}")
            lines.append(f"{metric.name}_count{_braces(pairs)} {_number(cumulative)}")
    return "\n".join(lines) + "\n"


def _braces(pairs):
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value):
    """A label value: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value):
    """Integral values without a fraction, others as Python's shortest repr; +Inf, -Inf, NaN."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(float(value))


def public_endpoints(settings):
    """The routes the metrics settings open to callers without a key (the Authenticator takes them
    at construction): `general_settings.metrics_public: true` (a literal true) opens `/metrics`."""
    if settings.general.metrics_public:
        return frozenset({"metrics.metrics"})
    return frozenset()


def install(gateway):
    """Count every call of this worker's app; returns the Metrics that render `/metrics`."""
    settings = gateway.settings
    base = settings.router.local_state_path
    metrics = Metrics(gateway.router, MetricStore(base + ".metrics" if base else None))
    gateway.observers.add(metrics.observe)
    ledger = gateway.spend.ledger if gateway.spend is not None else None
    if ledger is not None:
        ledger.on_quarantine = metrics.quarantined
    return metrics
