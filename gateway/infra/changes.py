"""A change counter every worker of an instance (and, with Redis, every instance) reads cheaply.

One 8-byte file beside the router's shared state (a SharedFile, gateway/infra/shm.py; /dev/shm):
the workers of an instance map it and read it without a lock or a system call (a fraction of a
microsecond), and a management call adds one after its commit. Whoever caches something the count
guards (a key's rules, the database's models) compares the count it cached under with the count
now, so a call that starts after the management call answered sees the change, on every worker.

With Redis, the count is kept there too and each worker reads it at most every `remote_seconds`
(one GET, amortized over the calls in between): other instances follow within that time. Users:
virtual keys (gateway/access/keychanges.py) and database models (gateway/routing/dbmodels.py).

While Redis is unreachable the count others made is unknown: `remote_down` says so (the users fall
back to what they do without Redis), and the first count read once Redis answers again counts as a
change whatever its value, so a change made anywhere meanwhile is picked up even though a restarted
Redis starts the count again from nothing. A change announced while Redis was down is announced
there again once it answers.
"""

import logging
import struct

from gateway.infra.shm import PROCESS
from gateway.infra.shm import shared_file

log = logging.getLogger("gateway.infra.changes")

_COUNTER = struct.Struct("<q")
_UNKNOWN = object()  # the Redis count while Redis is down: differs from any count read later
REDIS_TTL = 30 * 86400


class ChangeCounter:
    """The count of changes of one kind (`what`) an instance, and with Redis every instance, made.

    `state` is the router's shared state: a LocalState, or a RedisState that keeps the instance's
    LocalState as `fallback`; `suffix` names the counter file beside it, `redis_name` its Redis key."""

    def __init__(self, state, remote_seconds, suffix, redis_name, what="change"):
        local = getattr(state, "fallback", state)
        self.path = local.path + suffix
        self.remote = state if state is not local else None
        self.remote_seconds = remote_seconds
        self.redis_name = redis_name
        self.what = what
        self._file = None  # this process's SharedFile of the counter
        self._broken = False
        self._remote_value = None
        self._remote_epoch = 0  # how many times the Redis count was seen to move
        self._next_check = 0.0
        self._owed = False  # a change this process announced while Redis was down

    @property
    def shared_remotely(self):
        """Whether other instances hear of a change through Redis."""
        return self.remote is not None

    @property
    def remote_down(self):
        """Whether changes are shared through Redis but Redis is unreachable now."""
        return self.remote is not None and not getattr(self.remote, "reachable", True)

    def _open(self):
        """The shared counter file, mapped once per process (a forked worker maps it for itself)."""
        if self._file is None or self._file.pid != PROCESS["pid"]:
            self._file = shared_file(self.path, _COUNTER.size)
        return self._file

    def _break(self, exc):
        self._broken = True
        log.warning("%s changes cannot be shared between workers (%s: %s); the other workers notice one "
                    "later", self.what, type(exc).__name__, exc)

    def count(self, now):
        """The number of changes so far (the hot path calls it: keep it cheap)."""
        if self._broken:
            return 0
        try:
            shared = self._file
            if shared is None or shared.pid != PROCESS["pid"]:
                shared = self._open()
            value = _COUNTER.unpack_from(shared.map)[0]
        except (OSError, ValueError) as exc:
            self._break(exc)
            return 0
        if self.remote is not None and now >= self._next_check:
            self._check_remote(now)
        return value + self._remote_epoch

    def _check_remote(self, now):
        # The next check is due only once this one has its answer: a call that comes while the GET
        # is in flight (another greenlet) asks too, rather than going on with the count from before.
        try:
            value = self.remote.get_many([self.redis_name])[0]  # the local count while Redis is down
        except Exception:  # noqa: BLE001  (state, never worth failing a call: look again later)
            self._next_check = now + self.remote_seconds
            return
        self._next_check = now + self.remote_seconds
        if self.remote_down:
            value = _UNKNOWN  # the value read is this instance's own count, not the instances'
        elif self._owed:
            self._owed = False
            self._announce_remotely()
        if value != self._remote_value:
            self._remote_value = value
            self._remote_epoch += 1

    def announce(self):
        """Count one change, after its commit: in the instance at once, in Redis for the others."""
        if not self._broken:
            try:
                with self._open() as table:
                    _COUNTER.pack_into(table, 0, _COUNTER.unpack_from(table)[0] + 1)
            except (OSError, ValueError) as exc:
                self._break(exc)
        if self.remote is not None:
            self._announce_remotely()

    def _announce_remotely(self):
        try:
            self.remote.add(self.redis_name, 1, ttl=REDIS_TTL)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not count a %s change in Redis (%s); other instances notice it later",
                        self.what, type(exc).__name__)
        self._owed = self.remote_down  # counted only locally: count it in Redis once it answers
