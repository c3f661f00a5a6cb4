"""Shared memory for the workers of one instance: private files, their mappings, and a gauge table.

`SharedFile` is the one shared-memory type: a private file mapped by each process, changed under an
fcntl lock (a contended lock wakes the waiter as soon as it is released, where SQLite's busy handler
sleeps a millisecond or more). `shared_file` hands out one per file and process. Built on it: the
key -> (value, expiry) `SharedTable` below (LocalState's in-flight gauges, cooldowns and latencies;
sliding windows stay in SQLite), the metrics table (gateway/telemetry/metrics.py) and the key-change
counter (gateway/infra/changes.py).

Every file the gateway keeps there (this table, the router state, the metrics) is private: it lives
in a directory only its user can enter (`private_dir`) and is opened through `open_private`, which
creates it 0600 atomically and never follows a link someone planted at its name.
"""

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct
import threading
import time

SLOTS = 16384
_SLOT = struct.Struct("<qdd")  # key hash (0 = never used), value, expiry (unix time)
_SIZE = SLOTS * _SLOT.size

# This process's id, kept current across forks: os.getpid() is a system call, this a dict read.
PROCESS = {"pid": os.getpid()}
os.register_at_fork(after_in_child=lambda: PROCESS.update(pid=os.getpid()))


def instance_owner():
    """The pid whose lifetime an instance's files follow: the gunicorn master (the workers' parent),
    else this process."""
    return os.getppid() if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn") else os.getpid()


def private_dir(base):
    """`base`/gateway-<uid>, made 0700 if missing (mkdir is atomic); refused when it is a symlink, not
    a directory or someone else's (a name planted in a shared directory such as /dev/shm)."""
    path = os.path.join(base, f"gateway-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"refusing to use {path}: it is not a directory of this user (uid {os.geteuid()}); "
                              "remove it, or set router_settings.local_state_path")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)  # ours (made by hand, say), and in a sticky directory nobody can swap it
    return path


def open_private(path):
    """A read-write descriptor on a file only this user can read: created 0600 with O_EXCL, or opened
    without following a symlink and checked to be this user's regular file with no other link (one
    left 0644 by an earlier version is tightened)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)  # a planted FIFO must not block the open
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(f"refusing to follow the symlink at {path}") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise PermissionError(f"refusing to use {path}: not a regular file of this user with a single link")
    os.set_blocking(fd, True)
    if stat.S_IMODE(info.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


class SharedFile:
    """One process's read-write mapping of a private file of `size` bytes.

    `with shared as table:` holds the file's fcntl lock (other processes) and a thread lock (POSIX
    record locks do not exclude the threads of one process) and gives the mmap; reads that need no
    lock use `.map` directly. Get one through `shared_file`, never two for one file in a process:
    closing any descriptor of a file drops the process's lock on it.
    """

    def __init__(self, path, size):
        fd = open_private(path)  # 0600, never through a planted link
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.path = path
        self.size = size
        self.fd = fd
        self.pid = PROCESS["pid"]
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        return self.map

    def __exit__(self, *exc):
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def run_locked(self, fn):
        """fn(mmap) under the lock (as `with`, without its two Python-level calls: the gauge table
        takes this lock on every call)."""
        with self._lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                return fn(self.map)
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _drop_inherited(self):
        """In a forked child: close the parent's descriptor (the child holds no lock through it) and
        its mapping, unless a view of the mapping is still in use (it is then freed with the view)."""
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            self.map.close()
        except BufferError:
            pass


_FILES = {}  # path -> this process's SharedFile
_FILES_LOCK = threading.Lock()


def shared_file(path, size):
    """This process's SharedFile for `path`, mapped on first use (and again in a forked child)."""
    shared = _FILES.get(path)
    if shared is None or shared.pid != PROCESS["pid"] or shared.size < size:
        with _FILES_LOCK:
            shared = _FILES.get(path)
            if shared is None or shared.pid != PROCESS["pid"] or shared.size < size:
                if shared is not None and shared.pid != PROCESS["pid"]:
                    shared._drop_inherited()
                shared = _FILES[path] = SharedFile(path, size)
    return shared


def slot_hash(data):
    """A 64-bit signed hash of `data` (bytes) for open addressing; never 0, which marks an empty slot."""
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
    return value or 1


def _hash(key):
    return slot_hash(key.encode())


class SharedTable:
    """Atomic add/set/get of expiring floats, shared by every process that maps the same file."""

    def __init__(self, path):
        self.path = path
        self._file = None  # this process's SharedFile of the table

    def _locked(self, fn):
        shared = self._file
        if shared is None or shared.pid != PROCESS["pid"] or shared.size < _SIZE:
            shared = self._file = shared_file(self.path, _SIZE)
        return shared.run_locked(fn)

    @staticmethod
    def _find(table, h, now):
        """(slot of the key or None, first reusable slot on its probe chain)."""
        start = h % SLOTS
        reusable = None
        for step in range(SLOTS):
            slot = (start + step) % SLOTS
            key, _value, expires = _SLOT.unpack_from(table, slot * _SLOT.size)
            if key == h:
                return slot, reusable
            if key == 0:
                return None, slot if reusable is None else reusable
            if reusable is None and expires <= now:
                reusable = slot
        return None, reusable

    def add(self, key, delta, ttl):
        """Add to the key's live value (0 when unset or expired), floored at 0; returns it."""
        h, now = _hash(key), time.time()

        def run(table):
            slot, free = self._find(table, h, now)
            current = 0.0
            if slot is not None:
                _, value, expires = _SLOT.unpack_from(table, slot * _SLOT.size)
                current = value if expires > now else 0.0
            else:
                slot = free
            if slot is None:
                raise RuntimeError("shared state table is full")
            value = max(0.0, current + delta)
            _SLOT.pack_into(table, slot * _SLOT.size, h, value, now + ttl)
            return value
        return self._locked(run)

    def set(self, key, value, ttl):
        """Set the key's value until now + ttl."""
        h, now = _hash(key), time.time()

        def run(table):
            slot, free = self._find(table, h, now)
            slot = slot if slot is not None else free
            if slot is None:
                raise RuntimeError("shared state table is full")
            _SLOT.pack_into(table, slot * _SLOT.size, h, float(value), now + ttl)
        self._locked(run)

    def get_many(self, keys):
        """Live values of the keys (None when unset or expired)."""
        now = time.time()

        def run(table):
            out = []
            for key in keys:
                slot, _ = self._find(table, _hash(key), now)
                if slot is None:
                    out.append(None)
                    continue
                _, value, expires = _SLOT.unpack_from(table, slot * _SLOT.size)
                out.append(value if expires > now else None)
            return out
        return self._locked(run)
