"""How every worker learns at once that a key changed (blocked, updated, regenerated, deleted).

A change counter beside the router's shared state: the workers of an instance map one 8-byte file
next to the state file (gateway/state.py; /dev/shm), read it on every cached key lookup without a
lock or a system call (a fraction of a microsecond), and a management call adds one after its
commit. A lookup whose cache entry was made under another count reads the key again, so a call
that starts after the management call answered sees the change, on every worker.

With Redis, the count is kept there too and each worker reads it at most every `remote_seconds`
(one GET, amortized over the calls in between): other instances follow within that time. Without
Redis, other instances follow when their cache entry ends (keys.CACHE_SECONDS).
"""

import fcntl
import logging
import mmap
import os
import struct

log = logging.getLogger("gateway.access.keys")

_COUNTER = struct.Struct("<q")
REDIS_NAME = "keys-changed"
REDIS_TTL = 30 * 86400
# This process's id, kept current across forks: os.getpid() is a system call, this a dict read.
_PROCESS = {"pid": os.getpid()}
os.register_at_fork(after_in_child=lambda: _PROCESS.update(pid=os.getpid()))


class KeyChanges:
    """The count of key changes an instance (and, with Redis, every instance) has made."""

    def __init__(self, state, remote_seconds):
        local = getattr(state, "fallback", state)  # a RedisState keeps the instance's LocalState here
        self.path = local.path + ".keys"
        self.remote = state if state is not local else None
        self.remote_seconds = remote_seconds
        self._pid = None
        self._fd = None
        self._map = None
        self._broken = False
        self._remote_value = None
        self._remote_epoch = 0  # how many times the Redis count was seen to move
        self._next_check = 0.0

    def _open(self):
        """The shared mapping, opened once per process (a forked worker maps the file for itself)."""
        if self._pid != _PROCESS["pid"]:
            if self._fd is not None:  # inherited from the parent: not ours to keep open
                self._map.close()
                os.close(self._fd)
                self._fd = self._map = None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _COUNTER.size:
                    os.ftruncate(fd, _COUNTER.size)
                self._map = mmap.mmap(fd, _COUNTER.size)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._pid = fd, _PROCESS["pid"]
        return self._map

    def _break(self, exc):
        self._broken = True
        log.warning("key changes cannot be shared between workers (%s: %s); a changed key is noticed "
                    "by the other workers when their cached copy ends", type(exc).__name__, exc)

    def count(self, now):
        """The number of changes so far (the hot path calls it on every lookup: keep it cheap)."""
        if self._broken:
            return 0
        try:
            value = _COUNTER.unpack_from(self._map if self._pid == _PROCESS["pid"] else self._open())[0]
        except (OSError, ValueError) as exc:
            self._break(exc)
            return 0
        if self.remote is not None and now >= self._next_check:
            self._check_remote(now)
        return value + self._remote_epoch

    def _check_remote(self, now):
        self._next_check = now + self.remote_seconds
        try:
            value = self.remote.get_many([REDIS_NAME])[0]  # the local count while Redis is down
        except Exception:  # noqa: BLE001  (state, never worth failing a call: look again later)
            return
        if value != self._remote_value:
            self._remote_value = value
            self._remote_epoch += 1

    def announce(self):
        """Count one change, after its commit: in the instance at once, in Redis for the others."""
        if not self._broken:
            try:
                table = self._open()
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
                try:
                    _COUNTER.pack_into(table, 0, _COUNTER.unpack_from(table)[0] + 1)
                finally:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
            except (OSError, ValueError) as exc:
                self._break(exc)
        if self.remote is not None:
            try:
                self.remote.add(REDIS_NAME, 1, ttl=REDIS_TTL)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not count a key change in Redis (%s); other instances notice it when "
                            "their cached copy ends", type(exc).__name__)
