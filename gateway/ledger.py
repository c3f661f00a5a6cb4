"""The spend ledger: durable rows, budget holds, and their database statements.

Under gevent (the gateway's workers) a call's row is appended to this process's journal before the
call's greenlet moves on and a flusher greenlet commits the rows in batches; elsewhere rows are
committed before `write()` returns. While the database is down the journal keeps them, and they are
replayed, each request id once. Budget holds are one conditional UPDATE each (gateway/spend.py says
what is held and why).
"""

import fcntl
import logging
import os
import threading
import time
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import orjson

from gateway import errors

log = logging.getLogger("gateway.spend")

RETRY_SECONDS = 2.0  # how long the ledger spools before trying the database again
FLUSH_DELAY = 0.02  # seconds journaled rows wait for more rows to share their commit
SWEEP_SECONDS = 30.0
SPOOL_PREFIX = "spend-"


def _now():
    return datetime.now(timezone.utc)


class _Entry:
    """A row waiting for the ledger: its hold, its key's budget period, and how writing it went."""

    __slots__ = ("row", "hold", "reset", "done", "error")

    def __init__(self, row, hold=0.0, reset=None):
        self.row, self.hold, self.reset = row, hold, reset
        self.done, self.error = False, None



class Ledger:
    """Durable spend rows: a journal file, group commits to the database, replay after an outage.

    Under gevent (the gateway's workers) a call's row is appended to this process's journal file
    before the call's greenlet moves on (a write to the page cache: it survives the worker crashing)
    and a flusher greenlet commits every row queued since its last pass in one transaction, then drops
    that part of the journal. Elsewhere (tests, scripts) rows are committed before write() returns.
    While the database cannot be reached the journal simply keeps the rows (fsynced) and they are
    replayed when it answers; a journal whose process died (its flock is free) is replayed by
    another worker or instance. A request id is written once, so a replay never bills twice.
    """

    def __init__(self, open_db, spool_dir, asynchronous=None):
        self._open_db = open_db  # -> Database; raises while the database cannot be reached
        self.spool_dir = spool_dir
        self.asynchronous = asynchronous  # None: decided at the first write (gevent or not)
        self._lock = threading.Lock()
        self._pending = []  # synchronous mode: rows waiting for the writer that holds the lock
        self._queued = []  # asynchronous mode: rows in the journal, not yet committed
        self._journal = None  # (pid, fd, path): this process's journal, flock'ed while it lives
        self._segments = {}  # path -> fd: our own set-aside journals waiting for the database
        self._clean = True  # the journal holds only rows that are in _queued
        self._down_until = 0.0
        self._down_logged = False
        self._spooled = self._has_spool()
        self._wake = None
        self._flusher = None
        self._worker = None

    # -- writing ----------------------------------------------------------------------------------

    def write(self, row, hold=0.0, rules=None):
        """Make one row durable before returning (journaled, committed or spooled); raises if
        none of these worked."""
        entry = _Entry(row, hold, _reset_seconds(rules))
        if self.asynchronous is None:
            self.asynchronous = _cooperative()
        if self.asynchronous:
            try:
                self._append([entry], fsync=False)
            except OSError as exc:
                log.error("spend: the journal cannot be written (%s); committing directly", exc)
            else:
                self._queued.append(entry)
                self._wake_flusher(hurry=bool(hold))
                self._ensure_worker()
                return
        self._pending.append(entry)
        if not self._lock.locked() and _cooperative():
            # Let the other greenlets whose responses are finishing now queue their rows, so one
            # commit carries them all (SQLite calls never yield, so they would queue nowhere else).
            _yield()
        with self._lock:
            if not entry.done:  # else committed by the greenlet that held the lock
                batch, self._pending = self._pending, []
                self._flush(batch)
        self._ensure_worker()
        if entry.error is not None:
            raise entry.error

    def flush(self):
        """Commit what the journal holds now (the flusher's pass; also for tests and shutdown)."""
        with self._lock:
            self._flush_queued()

    def _flush_queued(self):
        if not self._queued:
            return
        if time.monotonic() < self._down_until:
            self._set_aside()  # they wait in the journal, replayed when the database answers
            return
        clean = self._clean
        path, batch = self._rotate()
        try:
            db = self._open_db()
            if clean:
                self._commit(db, batch, idempotent=False)
            else:
                self._commit_file(db, path)
        except Exception as exc:  # noqa: BLE001  (any database failure: the rows stay on disk)
            self._went_down(exc)
            self._fsync_segment(path)
            self._spooled = True
            return
        self._drop_segment(path)
        self._came_back()
        if self._segments:  # rows set aside by an earlier failed pass; others' by the background loop
            try:
                self._replay(db)
            except Exception as exc:  # noqa: BLE001
                self._went_down(exc)

    def _set_aside(self):
        """Database down: the queued rows stay in the journal (fsynced), to be replayed."""
        self._queued = []
        self._clean = False
        self._spooled = True
        if self._journal is not None:
            try:
                os.fsync(self._journal[1])
            except OSError:
                pass

    def _wake_flusher(self, hurry=False):
        """Rows wait up to FLUSH_DELAY so that one commit carries many (and none runs between a
        response and the connection's next request); a budget hold's settlement goes at once."""
        if self._flusher is None or self._flusher[0] != os.getpid():
            if not _cooperative():
                return  # no gevent: flush() is called by whoever drives this ledger
            import gevent
            from gevent.event import Event
            self._wake, self._hurry = Event(), Event()
            self._flusher = (os.getpid(), gevent.spawn(self._flush_loop))
        if hurry:
            self._hurry.set()
        self._wake.set()

    def _flush_loop(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            self._hurry.wait(FLUSH_DELAY)
            self._hurry.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001  (the loop must outlive any one failure)
                log.exception("spend: flush failed")

    def _flush(self, batch):
        """Commit the batch, else spool it; every entry ends done, with the error if both failed."""
        try:
            if time.monotonic() >= self._down_until:
                try:
                    db = self._open_db()
                    self._commit(db, batch, idempotent=False)
                except Exception as exc:  # noqa: BLE001  (any database failure: spool, never drop)
                    self._went_down(exc)
                else:
                    self._came_back()
                    for entry in batch:
                        entry.done = True
                    if self._spooled:
                        try:
                            self._replay(db)
                        except Exception as exc:  # noqa: BLE001  (the spool stays; retried later)
                            self._went_down(exc)
                    return
            self._spool(batch)
        except Exception as exc:  # noqa: BLE001  (the spool itself failed: every waiter must know)
            log.error("spend: %d row(s) could not be recorded or spooled: %s", len(batch), exc)
            for entry in batch:
                entry.error = exc
        finally:
            for entry in batch:
                entry.done = True

    def _went_down(self, exc):
        self._down_until = time.monotonic() + RETRY_SECONDS
        if not self._down_logged:
            self._down_logged = True
            log.error("spend: the database is unavailable (%s); rows are spooled to %s and replayed "
                      "when it answers", type(exc).__name__, self.spool_dir)

    def _came_back(self):
        if self._down_logged:
            self._down_logged = False
            log.warning("spend: the database answers again; replaying spooled rows")

    def _commit(self, db, batch, idempotent):
        """Rows, key spend and hold releases in one transaction (all or nothing)."""
        if not batch:
            return
        sql = _sql()
        with db.engine.begin() as connection:
            if idempotent:
                fresh = [e for e in batch if _insert_new(connection, db, e.row)]
            else:
                connection.execute(sql.insert_rows, [e.row for e in batch])
                fresh = batch
            per_key = {}
            for entry in fresh:
                digest = entry.row["key_hash"]
                if digest is None:
                    continue
                if entry.reset and digest not in per_key:
                    _reset_if_due(connection, digest, entry.reset)
                per_key[digest] = per_key.get(digest, 0.0) + entry.row["cost"]
            spent = [{"h": digest, "c": cost} for digest, cost in per_key.items() if cost]
            if spent:
                connection.execute(sql.add_spend, spent)
            for entry in batch:
                row, hold = entry.row, entry.hold
                if hold and row["key_hash"] is not None:
                    if connection.execute(sql.drop_hold, {"r": row["request_id"]}).rowcount:
                        connection.execute(sql.release, {"h": row["key_hash"], "a": hold})

    # -- budget holds -----------------------------------------------------------------------------

    def hold(self, rules, request_id, amount, seconds):
        """Reserve `amount` of the key's budget atomically: (admitted, budget left)."""
        sql = _sql()
        reset = _reset_seconds(rules)
        try:
            db = self._open_db()
            for attempt in (1, 2):
                with db.engine.begin() as connection:
                    if reset:
                        _reset_if_due(connection, rules.hash, reset)
                    if connection.execute(sql.take, {"h": rules.hash, "a": amount}).rowcount:
                        connection.execute(sql.add_hold, {
                            "request_id": request_id, "key_hash": rules.hash, "amount": amount,
                            "expires_at": _now() + timedelta(seconds=seconds)})
                        return True, 0.0
                    found = connection.execute(sql.budget, {"h": rules.hash}).first()
                if attempt == 1 and self.sweep(db, rules.hash):
                    continue  # a dead worker's hold just expired: try once more
                if found is None or found.max_budget is None:
                    return True, 0.0  # deleted, or its budget removed since the key was cached
                return False, found.max_budget - found.spend - found.reserved
        except errors.GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("budget hold failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailableError(
                "The budget store is unavailable, so a call with a budgeted key cannot be admitted; "
                "retry shortly.", code="budget_store_unavailable", headers={"Retry-After": "2"}) from exc
        return False, 0.0

    def sweep(self, db, key_hash=None):
        """Release expired holds (their worker died mid-call); returns how many."""
        from sqlalchemy import select

        from gateway.db.models import BudgetHold
        holds, sql = BudgetHold.__table__, _sql()
        query = select(holds.c.request_id, holds.c.key_hash, holds.c.amount).where(holds.c.expires_at < _now())
        if key_hash is not None:
            query = query.where(holds.c.key_hash == key_hash)
        released = 0
        with db.engine.begin() as connection:
            for request_id, digest, amount in connection.execute(query.limit(500)).all():
                if connection.execute(sql.drop_hold, {"r": request_id}).rowcount:
                    connection.execute(sql.release, {"h": digest, "a": amount})
                    released += 1
        if released:
            log.warning("released %d expired budget hold(s)", released)
        return released

    # -- the spool --------------------------------------------------------------------------------

    def _journal_path(self):
        return os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}.jsonl")

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
        """Append rows to this process's journal. The file stays open and flock'ed while this
        process lives: that lock, not the pid in the name (pids are reused after a restart), tells
        others whether its owner is still alive."""
        if self._journal is None or self._journal[0] != os.getpid():
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            path = self._journal_path()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._journal = (os.getpid(), fd, path)
        data = b"".join(orjson.dumps({"row": e.row, "hold": e.hold, "reset": e.reset}) + b"\n" for e in batch)
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
        it holds). New rows start a new journal."""
        batch, self._queued = self._queued, []
        self._clean = True
        if self._journal is None or self._journal[0] != os.getpid():
            return None, batch
        _pid, fd, path = self._journal
        segment = os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl")
        os.rename(path, segment)
        self._segments[segment] = fd
        self._journal = None
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
        ours first. A journal whose owner lives is left to it."""
        self._rotate_for_replay()
        claimed = [(path, fd, True) for path, fd in self._segments.items()]
        try:
            names = sorted(os.listdir(self.spool_dir))
        except OSError:
            return claimed
        mine = {os.path.basename(p) for p in self._segments} | {self._own_journal_name()}
        for name in names:
            if not name.startswith(SPOOL_PREFIX) or name in mine:
                continue
            path = os.path.join(self.spool_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its owner is alive and replays it itself
            target = os.path.join(self.spool_dir, f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl")
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

    def _commit_file(self, db, path):
        """Commit every row of a journal file, each request id once."""
        with open(path, "rb") as handle:
            lines = [orjson.loads(line) for line in handle if line.strip()]
        batch = [_Entry(_revive(item["row"]), item.get("hold") or 0.0, item.get("reset")) for item in lines]
        for start in range(0, len(batch), 500):
            self._commit(db, batch[start:start + 500], idempotent=True)
        return len(batch)

    def _replay(self, db):
        """Commit journaled rows (each request id once); files are removed once committed."""
        for path, fd, ours in self._claimable():
            try:
                count = self._commit_file(db, path)
            except (OSError, orjson.JSONDecodeError) as exc:
                log.error("spend: cannot read journal %s: %s", path, type(exc).__name__)
                if not ours:
                    os.close(fd)
                continue
            if ours:
                self._drop_segment(path)
            else:
                try:
                    os.unlink(path)
                finally:
                    os.close(fd)
            log.warning("spend: replayed %d journaled row(s)", count)
        self._spooled = self._has_spool()

    # -- background: replay while idle, expire holds ----------------------------------------------

    def _ensure_worker(self):
        if self._worker is None or self._worker[0] != os.getpid():
            thread = threading.Thread(target=self._background, name="gateway-spend", daemon=True)
            self._worker = (os.getpid(), thread)
            thread.start()

    def _background(self):
        last_sweep = 0.0
        while True:
            time.sleep(RETRY_SECONDS)
            try:
                if not self._spooled:  # a journal another process left behind, say
                    self._spooled = self._has_spool()
                if self._spooled and time.monotonic() >= self._down_until:
                    with self._lock:
                        try:
                            db = self._open_db()
                            with db.engine.connect():
                                pass  # answers again?
                            self._came_back()
                            self._replay(db)
                        except Exception as exc:  # noqa: BLE001
                            self._went_down(exc)
                if time.monotonic() - last_sweep >= SWEEP_SECONDS and time.monotonic() >= self._down_until:
                    last_sweep = time.monotonic()
                    self.sweep(self._open_db())
            except Exception:  # noqa: BLE001  (the loop must outlive any one failure)
                log.debug("spend background pass failed", exc_info=True)

    # -- reading ----------------------------------------------------------------------------------

    def logs(self, key_hash=None, start=None, end=None, model=None, request_id=None, user_id=None, limit=1000):
        """Rows, newest first, filtered."""
        from sqlalchemy import or_
        from sqlalchemy import select

        from gateway.db.models import SpendRow
        query = select(SpendRow)
        if key_hash is not None:
            query = query.where(SpendRow.key_hash == key_hash)
        if start is not None:
            query = query.where(SpendRow.start_time >= start)
        if end is not None:
            query = query.where(SpendRow.start_time <= end)
        if model is not None:
            query = query.where(or_(SpendRow.model_group == model, SpendRow.model == model))
        if request_id is not None:
            query = query.where(SpendRow.request_id == request_id)
        if user_id is not None:
            query = query.where(SpendRow.user_id == user_id)
        query = query.order_by(SpendRow.start_time.desc(), SpendRow.id.desc()).limit(limit)
        with self._open_db().session() as session:
            return [_public(row) for row in session.scalars(query)]


def _cooperative():
    """Whether this process runs under gevent's monkey patching (gunicorn's gevent workers)."""
    import sys
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def _yield():
    import gevent
    gevent.sleep(0)


def _insert_new(connection, db, row):
    """Insert a row unless its request id is already there: whether it was new."""
    from gateway.db.models import SpendRow
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    statement = insert(SpendRow.__table__).values(**row).on_conflict_do_nothing(index_elements=["request_id"])
    return connection.execute(statement).rowcount == 1


def _reset_seconds(rules):
    """The key's budget period in seconds, or None."""
    if rules is None or not rules.budget_duration:
        return None
    from gateway.keys import parse_duration
    try:
        delta = parse_duration(rules.budget_duration)
    except errors.GatewayError:
        return None
    return delta.total_seconds() if delta else None


def _reset_if_due(connection, digest, seconds):
    """Start a new budget period when the current one is over (once, whichever worker sees it)."""
    now = _now()
    connection.execute(_sql().reset, {"h": digest, "now": now, "next": now + timedelta(seconds=seconds)})


class _Statements:
    """The ledger's statements, built once (SQLAlchemy Core, every value a bound parameter)."""

    def __init__(self):
        from sqlalchemy import bindparam
        from sqlalchemy import delete
        from sqlalchemy import insert
        from sqlalchemy import select
        from sqlalchemy import update

        from gateway.db.models import BudgetHold
        from gateway.db.models import SpendRow
        from gateway.db.models import VirtualKey
        keys, holds = VirtualKey.__table__, BudgetHold.__table__
        this_key = keys.c.key_hash == bindparam("h")
        self.insert_rows = insert(SpendRow.__table__)
        self.add_spend = update(keys).where(this_key).values(spend=keys.c.spend + bindparam("c"))
        self.drop_hold = delete(holds).where(holds.c.request_id == bindparam("r"))
        self.release = update(keys).where(this_key).values(reserved=keys.c.reserved - bindparam("a"))
        self.take = (update(keys).where(this_key, keys.c.max_budget.is_not(None),
                                        keys.c.spend + keys.c.reserved + bindparam("a") <= keys.c.max_budget)
                     .values(reserved=keys.c.reserved + bindparam("a")))
        self.add_hold = insert(holds)
        self.budget = select(keys.c.spend, keys.c.reserved, keys.c.max_budget).where(this_key)
        self.reset = (update(keys).where(this_key, keys.c.budget_reset_at.is_not(None),
                                         keys.c.budget_reset_at <= bindparam("now"))
                      .values(spend=0.0, budget_reset_at=bindparam("next")))


_STATEMENTS = []


def _sql():
    """The statements (built on first use, so SQLAlchemy loads only when spend is recorded)."""
    if not _STATEMENTS:
        _STATEMENTS.append(_Statements())
    return _STATEMENTS[0]


def _revive(row):
    """A spooled row with its datetimes back."""
    for name in ("start_time", "end_time"):
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return row


def _public(row):
    """A ledger row as /spend/logs shows it."""
    def iso(value):
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return {"request_id": row.request_id, "api_key": row.key_hash, "key_alias": row.key_alias,
            "user": row.user_id, "team_id": row.team_id, "call_type": row.call_type,
            "model_group": row.model_group, "model_id": row.deployment_id, "custom_llm_provider": row.provider,
            "model": row.model, "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens, "spend": row.cost, "estimated": row.estimated,
            "cache_hit": row.cache_hit, "stream": row.stream, "status": row.status,
            "startTime": iso(row.start_time), "endTime": iso(row.end_time)}
