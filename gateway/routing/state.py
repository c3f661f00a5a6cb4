"""Router state shared by every worker: sliding-window counters, in-flight gauges, cooldowns, latency.

Two backends with one interface. `LocalState` is a SQLite file (windows) and a shared-memory table
(gauges, cooldowns, latencies) on /dev/shm that every gunicorn worker of one instance opens, so limits are exact across workers with no extra service. `RedisState` makes
them exact across instances; when Redis cannot be reached it says so once and falls back to the
instance's local state until Redis answers again, except that under `router_settings.
redis_outage_limits: refuse` a rate limit's check raises a 503 instead (LimitStateUnavailableError).
Nothing here runs unless a configured feature (limits, least-busy, usage/latency routing, cooldowns)
needs it.
"""

import logging
import math
import os
import sqlite3
import tempfile
import threading
import time
import uuid

from gateway import errors
from gateway.infra.redis import client as redis_client
from gateway.infra.shm import SharedTable
from gateway.infra.shm import instance_owner
from gateway.infra.shm import open_private
from gateway.infra.shm import private_dir

log = logging.getLogger("gateway.routing.state")

WINDOW = 60.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, ts REAL NOT NULL, amount REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hits_key_ts ON hits (key, ts)",
    "CREATE TABLE IF NOT EXISTS slots (key TEXT NOT NULL, member TEXT NOT NULL, expires REAL NOT NULL, "
    "PRIMARY KEY (key, member))",
)


def _shared_base():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def default_local_path():
    """One state file per gateway instance, keyed by the gunicorn master (the workers' parent), in
    this user's private directory on /dev/shm: the names are predictable, the directory keeps other
    users from reading them or planting links at them."""
    return os.path.join(private_dir(_shared_base()), f"gateway-state-{instance_owner()}.sqlite")


def remove_stale_files(base=None):
    """Delete state files of gateway instances that no longer run (their owner pid is gone): in this
    user's directory, and those earlier versions left in the shared directory itself."""
    if base is None:
        for directory in (os.path.dirname(default_local_path()), _shared_base()):
            remove_stale_files(directory)
        return
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith("gateway-state-"):
            continue
        pid = name[len("gateway-state-"):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(base, name))
            except OSError:
                pass
        except PermissionError:
            pass  # alive, owned by someone else


class LocalState:
    """Exact across the processes that open the same files: sliding windows in SQLite (BEGIN IMMEDIATE
    serializes writers), gauges and expiring values in a shared-memory table (gateway/shm.py)."""

    name = "local"

    def __init__(self, path=None):
        self.path = path or default_local_path()
        self.table = SharedTable(self.path + ".kv")
        self._conn = None
        self._pid = None
        # One connection per process. Under gevent a transaction never yields (sqlite3 is C code),
        # so greenlets cannot interleave inside one; the lock only matters for real threads.
        self._lock = threading.Lock()

    def _db(self):
        if self._conn is None or self._pid != os.getpid():
            # Made 0600 (never through a planted link) before SQLite opens it: its -wal and -shm
            # files take the database file's mode.
            os.close(open_private(self.path))
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            deadline = time.monotonic() + 10
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    # Switching a fresh file to WAL fails at once, without the busy timeout, while
                    # another worker holds a lock on it: wait like every other statement does.
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            db.execute("PRAGMA synchronous=OFF")  # state, not records: speed over durability
            for statement in _SCHEMA:
                db.execute(statement)
            self._conn, self._pid = db, os.getpid()
        return self._conn

    def _tx(self, fn):
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def admit(self, key, limit, amount=1.0, now=None, is_limit=True):
        """Add `amount` to the key's last-minute window if the window stays within `limit`.
        (`is_limit` matters to RedisState only: whether this checks a rate limit.)"""
        now = time.time() if now is None else now

        def run(db):
            db.execute("DELETE FROM hits WHERE key = ? AND ts <= ?", (key, now - WINDOW))
            used = db.execute("SELECT COALESCE(SUM(amount), 0) FROM hits WHERE key = ?", (key,)).fetchone()[0]
            if used + amount > limit:
                oldest = db.execute("SELECT MIN(ts) FROM hits WHERE key = ?", (key,)).fetchone()[0]
                return False, (oldest + WINDOW - now) if oldest else WINDOW
            db.execute("INSERT INTO hits (key, ts, amount) VALUES (?, ?, ?)", (key, now, amount))
            return True, 0.0
        return self._tx(run)

    def record(self, key, amount, now=None):
        """Add to a last-minute window without a limit (tokens used, failures)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db().execute("INSERT INTO hits (key, ts, amount) VALUES (?, ?, ?)", (key, now, amount))

    def window(self, key, now=None, is_limit=False):
        """The key's last-minute total."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db().execute("SELECT COALESCE(SUM(amount), 0) FROM hits WHERE key = ? AND ts > ?",
                                     (key, now - WINDOW)).fetchone()
        return row[0]

    def windows(self, keys, now=None):
        """Last-minute totals of several keys in one round trip."""
        return [self.window(k, now) for k in keys]

    def acquire(self, key, limit, member, ttl, now=None):
        """Take one of `limit` slots for `member` until released or `ttl` seconds pass (a slot of a
        worker that died expires): whether it was free."""
        now = time.time() if now is None else now

        def run(db):
            db.execute("DELETE FROM slots WHERE key = ? AND expires <= ?", (key, now))
            used = db.execute("SELECT COUNT(*) FROM slots WHERE key = ?", (key,)).fetchone()[0]
            if used >= limit:
                return False
            db.execute("INSERT OR REPLACE INTO slots (key, member, expires) VALUES (?, ?, ?)", (key, member, now + ttl))
            return True
        return self._tx(run)

    def release(self, key, member):
        """Give a slot back."""
        with self._lock:
            self._db().execute("DELETE FROM slots WHERE key = ? AND member = ?", (key, member))

    def add(self, key, delta, ttl=600.0):
        """Add to a gauge (in-flight calls); returns the new value."""
        return self.table.add(key, delta, ttl)

    def set(self, key, value, ttl):
        """Set a value that expires (cooldown until, latency)."""
        self.table.set(key, value, ttl)

    def get_many(self, keys):
        """Current values (None when unset or expired)."""
        return self.table.get_many(keys)

    def status(self):
        """For readiness."""
        return "local"


_ADMIT = """
local key, now, window, limit, amount, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = 0
for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  used = used + tonumber(string.match(m, '^([^:]+)'))
end
if used + amount > limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then return {0, tostring(tonumber(oldest[2]) + window - now)} end
  return {0, tostring(window)}
end
redis.call('ZADD', key, now, amount .. ':' .. member)
redis.call('EXPIRE', key, math.ceil(window) + 1)
return {1, '0'}
"""


_ACQUIRE = """
local key, now, limit, member, expires, keep = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3],
  tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, expires, member)
if redis.call('TTL', key) < keep then redis.call('EXPIRE', key, keep) end
return 1
"""


class RedisState:
    """The same operations on Redis (sorted sets hold windows); local state while Redis is down.

    While Redis is down a rate limit's check (admit, acquire, or a window read `is_limit`) goes by
    `outage_limits`: `local` checks it in the instance's local state (exact per instance, so N
    instances admit up to N x the limit), `refuse` raises LimitStateUnavailableError (a 503). Every
    other operation (usage, cooldowns, latency, gauges) uses the local state either way."""

    name = "redis"
    RETRY_AFTER = 5.0

    def __init__(self, client, fallback, prefix="gateway:", outage_limits="local"):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
        self.client = client
        self.fallback = fallback
        self.prefix = prefix
        self.outage_limits = outage_limits
        self._admit = client.register_script(_ADMIT)
        self._acquire = client.register_script(_ACQUIRE)
        # Only these say Redis cannot be reached; a refused command (WRONGTYPE, OOM) is one call's.
        self._outage = (RedisConnectionError, RedisTimeoutError, OSError)
        self._down_until = 0.0
        self._warned = False
        self._refused_said = False

    @property
    def reachable(self):
        """False from a failed command until Redis answers one again (no command of its own)."""
        return not self._warned

    def _call(self, fn, fallback_fn, is_limit=False):
        if time.monotonic() < self._down_until:
            return self._meanwhile(fallback_fn, is_limit)
        try:
            result = fn()
        except self._outage as exc:  # timeouts, refused connections: keep serving, locally for a while
            self._down_until = time.monotonic() + self.RETRY_AFTER
            if not self._warned:
                log.warning("Redis unreachable (%s); router state is per instance until it is back, and %s",
                            type(exc).__name__, _LIMITS_MEANWHILE[self.outage_limits])
                self._warned = True
            return self._meanwhile(fallback_fn, is_limit)
        except Exception as exc:  # noqa: BLE001  (a refused command: this call is served locally)
            if not self._refused_said:
                self._refused_said = True
                log.warning("Redis refused a router-state command (%s: %.200s); that call used local state",
                            type(exc).__name__, exc)
            return fallback_fn()
        if self._warned:
            log.warning("Redis reachable again; router state and rate limits are shared across instances")
            self._warned = False
        return result

    def _meanwhile(self, fallback_fn, is_limit):
        """Redis is down: the local state, or for a limit's check under `refuse` a 503."""
        if is_limit and self.outage_limits == "refuse":
            raise errors.LimitStateUnavailableError(
                "Rate limits are shared through Redis, which cannot be reached right now; calls under a "
                "rate limit are refused until it is back. Retry shortly.",
                headers={"Retry-After": str(max(1, math.ceil(self.RETRY_AFTER)))})
        return fallback_fn()

    def admit(self, key, limit, amount=1.0, now=None, is_limit=True):
        """Sliding-window admit, atomic in a Lua script."""
        now = time.time() if now is None else now

        def run():
            allowed, wait = self._admit(keys=[self.prefix + key],
                                        args=[now, WINDOW, limit, amount, uuid.uuid4().hex])
            return bool(int(allowed)), float(wait)
        return self._call(run, lambda: self.fallback.admit(key, limit, amount, now), is_limit)

    def record(self, key, amount, now=None):
        """Add to a window without a limit."""
        return self.admit(key, float("inf"), amount, now, is_limit=False)

    def window(self, key, now=None, is_limit=False):
        """The key's last-minute total (`is_limit`: read to check a limit)."""
        return self.windows([key], now, is_limit)[0]

    def windows(self, keys, now=None, is_limit=False):
        """Last-minute totals of several keys in one pipeline."""
        now = time.time() if now is None else now

        def run():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.zrangebyscore(self.prefix + key, now - WINDOW, "+inf")
            return [sum(float(m.split(b":", 1)[0]) for m in members) for members in pipe.execute()]
        return self._call(run, lambda: self.fallback.windows(keys, now), is_limit)

    def acquire(self, key, limit, member, ttl, now=None):
        """One of `limit` expiring slots, atomically (a sorted set scored by expiry)."""
        now = time.time() if now is None else now

        def run():
            return bool(int(self._acquire(keys=[self.prefix + key], args=[now, limit, member, now + ttl,
                                                                          int(ttl) + 1])))
        return self._call(run, lambda: self.fallback.acquire(key, limit, member, ttl, now), is_limit=True)

    def release(self, key, member):
        """Give a slot back (both here and in the fallback, which may hold it from an outage)."""
        self._call(lambda: self.client.zrem(self.prefix + key, member), lambda: None)
        self.fallback.release(key, member)

    def add(self, key, delta, ttl=600.0):
        """Add to a gauge."""
        def run():
            pipe = self.client.pipeline(transaction=True)
            pipe.incrbyfloat(self.prefix + key, delta)
            pipe.expire(self.prefix + key, int(ttl))
            return max(0.0, float(pipe.execute()[0]))
        return self._call(run, lambda: self.fallback.add(key, delta, ttl))

    def set(self, key, value, ttl):
        """Set an expiring value."""
        return self._call(lambda: self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000))),
                          lambda: self.fallback.set(key, value, ttl))

    def get_many(self, keys):
        """Current values (None when unset)."""
        def run():
            return [float(v) if v is not None else None for v in self.client.mget([self.prefix + k for k in keys])]
        return self._call(run, lambda: self.fallback.get_many(keys))

    def status(self):
        """For readiness: whether Redis answers, and if not what rate limits do meanwhile. A PING
        (quarter-second timeout) only when the state does not already know Redis is down."""
        if time.monotonic() >= self._down_until and self._call(lambda: self.client.ping() or True, lambda: False):
            return "redis"
        return _UNREACHABLE_STATUS[self.outage_limits]


_LIMITS_MEANWHILE = {
    "local": "rate limits are counted per instance meanwhile (each admits up to the full limit)",
    "refuse": "calls under a rate limit are refused (503) meanwhile (redis_outage_limits: refuse)",
}
_UNREACHABLE_STATUS = {
    "local": "redis unreachable (using local state)",
    "refuse": "redis unreachable (calls under a rate limit refused)",
}


def redis_settings(router, environ=os.environ):
    """(url or None, connection kwargs) from RouterSettings or REDIS_* env vars, or None when not
    configured (timeouts and retries are the client factory's: gateway/infra/redis.py)."""
    url = router.redis_url or environ.get("REDIS_URL")
    host = router.redis_host or environ.get("REDIS_HOST")
    if not url and not host:
        return None
    if url:
        return url, {}
    kwargs = {"host": host, "port": int(router.redis_port or environ.get("REDIS_PORT") or 6379)}
    password = router.redis_password or environ.get("REDIS_PASSWORD")
    if password:
        kwargs["password"] = password
    return None, kwargs


def build_state(router):
    """The state backend RouterSettings (gateway/config/sections.py) ask for."""
    local = LocalState(router.local_state_path)
    config = redis_settings(router)
    if config is None:
        return local
    url, kwargs = config
    return RedisState(redis_client(url, **kwargs), local, outage_limits=router.redis_outage_limits)
