"""The spend ledger's journal files: one per process, flock'ed while it lives, set aside as
segments, claimed from dead processes, and the quarantine file for what the database refused.

`JournalFiles` is the Ledger's half that touches files (gateway/ledger.py has the rest). Names in
the spool dir: `spend-<pid>.jsonl` a process's journal, `spend-<pid>-<id>.jsonl` a segment set aside
by it, `spend-<pid>-<id>.live.jsonl` a dead process's journal it claimed, `quarantine.jsonl`.
Every descriptor is O_CLOEXEC, and a forked child closes its copies (`forget_parent`): a flock
belongs to the open file, so any copy left in another process would keep a dead journal locked.
"""

import fcntl
import logging
import os
import re
import threading
import uuid

import orjson

log = logging.getLogger("gateway.spend.meter")

SPOOL_PREFIX = "spend-"
QUARANTINE_FILE = "quarantine.jsonl"  # rows the database refused (and unreadable lines), kept for a person
LIVE_SUFFIX = ".live.jsonl"  # a process's journal (not a set-aside segment); a dead one's once claimed
NEW_PREFIX = ".new-spend-"  # a journal being created: no claimer looks at it
_LIVE_NAME = re.compile(r"spend-\d+\.jsonl")  # a journal as versions before 2026-12-08 named it


class JournalFiles:
    """The journal, its segments and the quarantine file (a mixin of the Ledger, whose state it uses)."""

    def _new_journal(self):
        """A new journal, (pid, fd, path), locked before any other process can see it: created
        under a name no claimer looks at (NEW_PREFIX), flock'ed, then renamed to a name of its own
        (pid and a random token: a container's pids start over, so a pid alone may name an earlier
        run's journal). A claimer that finds it finds it locked: it can no longer take a live
        journal for a dead one's, and write `worker_died` rows for calls that are running."""
        token = uuid.uuid4().hex[:12]
        hidden = os.path.join(self.spool_dir, f"{NEW_PREFIX}{os.getpid()}-{token}")
        path = os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}-{token}{LIVE_SUFFIX}")
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            raise
        return os.getpid(), fd, path

    def _has_spool(self):
        """Whether any journal may need a replay: set-aside rows of ours, or any other journal
        (another process's may be orphaned). Our own clean journal is the flusher's business."""
        try:
            names = os.listdir(self.spool_dir)
        except OSError:
            return False
        own = self._own_journal_name()
        return any(n.startswith(SPOOL_PREFIX) and n != own for n in names)

    def _own_journal_name(self):
        if self._journal is not None and self._journal[0] == os.getpid() and self._clean:
            return os.path.basename(self._journal[2])
        return None

    def _append(self, batch, fsync):
        """Append rows to this process's journal."""
        self._append_bytes(b"".join(orjson.dumps({"row": e.row, "hold": e.hold, "reset": e.reset}
                                                 if e.lease is None else
                                                 {"row": e.row, "hold": e.hold, "reset": e.reset, "lease": e.lease})
                                    + b"\n" for e in batch), fsync)

    def _append_bytes(self, data, fsync=False):
        """Append to this process's journal. The file stays open and flock'ed while this process
        lives: that lock, not the pid in the name (pids are reused after a restart), tells others
        whether its owner is still alive. O_CLOEXEC: no program this process starts inherits it
        (and a forked child closes its copy: see _after_fork), or the lock would outlive us."""
        if self._journal is None or self._journal[0] != os.getpid():
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            self._journal = self._new_journal()
        os.write(self._journal[1], data)
        if fsync:
            os.fsync(self._journal[1])

    def _spool(self, batch):
        """Synchronous mode, database down: journal the rows, fsynced, before the calls move on."""
        self._append(batch, fsync=True)
        self._clean = False
        self._spooled = True

    def _rotate(self):
        """Set the journal aside as one of our segments (still locked): (its path, the queued rows
        it holds). A new journal starts with the calls still in flight and the budget leases held:
        only a dead process's journal, never its segments, turns start entries into rows and gives
        leases back."""
        batch, self._queued = self._queued, []
        self._clean = True
        if self._journal is None or self._journal[0] != os.getpid():
            return None, batch
        _pid, fd, path = self._journal
        segment = os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl")
        self._journal = None
        try:
            os.rename(path, segment)
        except FileNotFoundError:
            # Another process took it for a dead one's (it found the file between its creation and
            # our flock) or a person moved it: whoever holds it replays it; the batch is committed
            # from memory all the same (a request id is written once), and a new journal starts.
            log.error("spend: this process's journal %s is gone; a new one is started", path)
            os.close(fd)
            segment = None
        else:
            self._segments[segment] = fd
        if self._inflight or self._lease_lines:  # and the budget leases this process holds
            try:
                self._append_bytes(b"".join(self._inflight.values()) + b"".join(self._lease_lines.values()))
            except OSError as exc:
                log.error("spend: the journal cannot be written (%s)", exc)
        return segment, batch

    def _drop_segment(self, path):
        """A segment whose rows are committed: delete it and let its lock go."""
        if path is None:
            return
        fd = self._segments.pop(path, None)
        try:
            os.unlink(path)
        finally:
            if fd is not None:
                os.close(fd)

    def _fsync_segment(self, path):
        fd = self._segments.get(path)
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError:
                pass

    def _claimable(self):
        """Journals to replay, each (path, fd holding its lock, whether it is ours): our set-aside
        segments, and the journals of processes that are gone (their lock is free), renamed to
        ours first (a dead process's journal keeps LIVE_SUFFIX). A journal whose owner lives is
        left to it."""
        self._rotate_for_replay()
        claimed = [(path, fd, True) for path, fd in self._segments.items()]
        try:
            names = sorted(os.listdir(self.spool_dir))
        except OSError:
            return claimed
        mine = {os.path.basename(p) for p in self._segments} | {self._own_journal_name()}
        return claimed + self._claim_dead(names, mine)

    def _claim_dead(self, names, mine):
        """The journals among `names` whose owner is gone, each renamed to ours under its lock."""
        claimed = []
        for name in names:
            if not name.startswith(SPOOL_PREFIX) or name in mine:
                continue
            path = os.path.join(self.spool_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its owner is alive and replays it itself
            live = name.endswith(LIVE_SUFFIX) or _LIVE_NAME.fullmatch(name) is not None
            target = os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
                                                  f"{LIVE_SUFFIX if live else '.jsonl'}")
            try:
                os.rename(path, target)  # under our lock: nobody else takes it meanwhile
            except OSError:
                os.close(fd)
                continue
            claimed.append((target, fd, False))
        return claimed

    def _rotate_for_replay(self):
        """Our journal joins the segments to replay when it holds set-aside rows (its queued rows
        go with it; the replay commits them). A clean journal is the flusher's."""
        if self._journal is not None and self._journal[0] == os.getpid() and not self._clean:
            self._rotate()

    def _keep(self, item):
        """Append one entry to the quarantine file (fsynced: the journal holding it goes next)."""
        try:
            data = orjson.dumps(item, default=str)
        except TypeError:
            data = orjson.dumps({"raw": repr(item)[:100_000]})
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.spool_dir, QUARANTINE_FILE),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.on_quarantine is not None:
            try:
                self.on_quarantine(1)
            except Exception:  # noqa: BLE001  (a metric never stops the ledger)
                log.debug("quarantine counter failed", exc_info=True)

    def forget_parent(self):
        """In a forked child: the journal, segments and rows are the parent's. Close this process's
        copies of their descriptors (close, not unlock: LOCK_UN would free the parent's lock too),
        so a child that outlives its parent does not keep the parent's journal locked."""
        fds = [fd for _path, fd in self._segments.items()]
        if self._journal is not None:
            fds.append(self._journal[1])
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._journal, self._segments, self._clean = None, {}, True
        self._queued, self._pending, self._inflight, self._lease_lines = [], [], {}, {}
        self._lock = threading.Lock()
