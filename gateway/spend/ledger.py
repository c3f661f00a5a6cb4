"""The spend ledger: durable rows, budget holds, the journal and its replay.

Under gevent (the gateway's workers) a call's row is appended to this process's journal before the
call's greenlet moves on and a flusher greenlet commits the rows in batches; elsewhere rows are
committed before `write()` returns. While the database is down the journal keeps them, and they are
replayed, each request id once. A row the database refuses (bad data) is quarantined, never retried
forever. Budget holds take every budget a call must fit in one transaction (gateway/spend/budgets.py;
gateway/spend/meter.py says what is held and why). The statements and row checks live in
gateway/spend/statements.py.
"""

import logging
import os
import threading
import time
import weakref
from datetime import datetime
from datetime import timezone

import orjson

from gateway import errors
from gateway.infra.coop import cooperative
from gateway.infra.coop import yield_now
from gateway.spend import budgets
from gateway.spend import leases as budget_leases
from gateway.spend.journal import LIVE_SUFFIX
from gateway.spend.journal import QUARANTINE_FILE
from gateway.spend.journal import SPOOL_PREFIX  # noqa: F401  (part of this module's interface)
from gateway.spend.journal import JournalFiles
from gateway.spend.statements import Balance
from gateway.spend.statements import clean_row
from gateway.spend.statements import clean_text
from gateway.spend.statements import describe
from gateway.spend.statements import died_row
from gateway.spend import rollup
from gateway.spend.statements import insert_new
from gateway.spend.statements import key_of
from gateway.spend.statements import level_targets
from gateway.spend.statements import placeholder_row
from gateway.spend.statements import refused
from gateway.spend.statements import revive
from gateway.spend.statements import sql as _sql

log = logging.getLogger("gateway.spend.meter")

RETRY_SECONDS = 2.0  # how long the ledger spools before trying the database again
FLUSH_DELAY = 0.02  # seconds journaled rows wait for more rows to share their commit
SWEEP_SECONDS = 30.0
BATCH = 500  # rows per transaction in a replay
_LEDGERS = weakref.WeakSet()  # this process's ledgers, for the fork hook


def _now():
    return datetime.now(timezone.utc)


class _Entry:
    """A row waiting for the ledger: its hold, its key's budget period, and how writing it went."""

    __slots__ = ("row", "hold", "reset", "lease", "done", "error")

    def __init__(self, row, hold=0.0, reset=None, lease=None):
        self.row, self.hold, self.reset = row, hold, reset
        self.lease = lease  # the budget leases its hold came from (gateway/spend/leases.py), or None
        self.done, self.error = False, None



class Ledger(JournalFiles):
    """Durable spend rows: a journal file, group commits to the database, replay after an outage.

    Under gevent (the gateway's workers) a call's row is appended to this process's journal file
    before the call's greenlet moves on (a write to the page cache: it survives the worker crashing)
    and a flusher greenlet commits every row queued since its last pass in one transaction, then drops
    that part of the journal. Elsewhere (tests, scripts) rows are committed before write() returns.
    While the database cannot be reached the journal simply keeps the rows (fsynced) and they are
    replayed when it answers; a journal whose process died (its flock is free) is replayed by
    another worker or instance. A request id is written once, so a replay never bills twice.

    The journal also lists the calls in flight (`begin`, carried into each new journal file): when
    its process dies, the replay writes a `worker_died` row for each call that never got its own.
    """

    def __init__(self, open_db, spool_dir, asynchronous=None, budget_mode="soft", lease_seconds=0.0):
        self._open_db = open_db  # -> Database; raises while the database cannot be reached
        self.leases = budget_leases.Leases(lease_seconds)  # used by the asynchronous mode only
        self.spool_dir = spool_dir
        self.asynchronous = asynchronous  # None: decided at the first write (gevent or not)
        self.soft = budget_mode != "strict"
        self.on_quarantine = None  # fn(count): told of rows set aside (a metric)
        self._lock = threading.Lock()
        self._pending = []  # synchronous mode: rows waiting for the writer that holds the lock
        self._queued = []  # asynchronous mode: rows in the journal, not yet committed
        self._inflight = {}  # asynchronous mode: request id -> its start entry (a journal line)
        self._lease_lines = {}  # lease id -> its journal line, while this worker holds it
        self._journal = None  # (pid, fd, path): this process's journal, flock'ed while it lives
        self._segments = {}  # path -> fd: our own set-aside journals waiting for the database
        self._clean = True  # the journal holds only rows that are in _queued
        self._down_until = 0.0
        self._down_logged = False
        self._begin_failed = False
        self._spooled = self._has_spool()
        self._wake = None
        self._flusher = None
        self._worker = None
        _LEDGERS.add(self)
        if self._spooled and cooperative():
            # Journals left by a process that died (a crash, a kill): replayed from start-up, not
            # only once this worker serves its first call (an idle instance would bill nothing).
            self._ensure_worker()

    def prepare(self):
        """Build the statements now (a worker's warm-up, gateway/app.py warm), not in its first call."""
        _sql()

    # -- writing ----------------------------------------------------------------------------------

    def write(self, row, hold=0.0, rules=None, levels=()):
        """Make one row durable before returning (journaled, committed or spooled); raises if
        none of these worked. `rules` and `levels` give the budget periods its cost lands in."""
        entry = _Entry(clean_row(row), hold, budgets.periods(rules, levels))
        if self.asynchronous is None:
            self.asynchronous = cooperative()
        if self.asynchronous:
            self._inflight.pop(row["request_id"], None)
            # Held from leases: settled here, in memory; its row names them (no hold row of its own).
            entry.lease = self.leases.settle(row["request_id"], hold, entry.row["cost"], queued=True)
            if entry.lease is not None:
                entry.hold = 0.0
            try:
                self._append([entry], fsync=False)
            except OSError as exc:
                log.error("spend: the journal cannot be written (%s); committing directly", exc)
            else:
                self._queued.append(entry)
                self._wake_flusher(hurry=bool(entry.hold))
                self._ensure_worker()
                return
        self._pending.append(entry)
        if not self._lock.locked() and cooperative():
            # Let the other greenlets whose responses are finishing now queue their rows, so one
            # commit carries them all (SQLite calls never yield, so they would queue nowhere else).
            yield_now()
        with self._lock:
            if not entry.done:  # else committed by the greenlet that held the lock
                batch, self._pending = self._pending, []
                self._flush(batch)
        self._ensure_worker()
        if entry.error is not None:
            raise entry.error

    def begin(self, start, hold=0.0):
        """Journal that a call started (journal mode only; again when its budget hold is taken):
        request id, key, model group, start time, hold. If this process dies before the call's row
        is written, the replay of its journal writes one (status `worker_died`). One small append,
        never an fsync, as for rows."""
        if self.asynchronous is None:
            self.asynchronous = cooperative()
        if not self.asynchronous:
            return
        try:
            line = orjson.dumps({"start": start, "hold": hold}) + b"\n"
        except orjson.JSONEncodeError:  # a lone surrogate in client text (a replay cleans the rest)
            line = orjson.dumps({"start": clean_text(start), "hold": hold}) + b"\n"
        self._inflight[start["request_id"]] = line
        try:
            self._append_bytes(line)
        except OSError as exc:
            if not self._begin_failed:
                self._begin_failed = True
                log.error("spend: the journal cannot be written (%s); calls cut by a crash get no row", exc)

    def cancel(self, request_id, hold=0.0):
        """A call that `begin` journaled ends without a row (refused before routing)."""
        self.leases.settle(request_id, hold, 0.0, queued=False)
        if self._inflight.pop(request_id, None) is not None:
            try:
                self._append_bytes(orjson.dumps({"end": request_id}) + b"\n")
            except OSError:
                pass  # begin has logged it

    def flush(self):
        """Commit what the journal holds now (the flusher's pass; also for tests and shutdown)."""
        with self._lock:
            self._flush_queued()

    def _flush_queued(self):
        if not self._queued:
            self._give_back_leases()
            return
        if time.monotonic() < self._down_until:
            self._set_aside()  # they wait in the journal, replayed when the database answers
            return
        clean = self._clean
        path, batch = self._rotate()
        try:
            db = self._open_db()
            if clean:
                self._commit_safely(db, batch, idempotent=False)
            else:
                self._commit_file(db, path)
        except Exception as exc:  # noqa: BLE001  (the database is down: the rows stay on disk)
            self._went_down(exc)
            self._fsync_segment(path)
            self._spooled = True
            self._leases_done(batch, stuck=True)
            return
        self._drop_segment(path)
        self._came_back()
        self._leases_done(batch, stuck=False)
        self._give_back_leases(db)
        if self._segments:  # rows set aside by an earlier failed pass; others' by the background loop
            try:
                self._replay(db)
            except Exception as exc:  # noqa: BLE001
                self._went_down(exc)

    def _set_aside(self):
        """Database down: the queued rows stay in the journal (fsynced), to be replayed."""
        self._leases_done(self._queued, stuck=True)
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
            if not cooperative():
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
            self._wake.wait(self.leases.next_due())  # a lease that stops admitting is given back
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
                    self._commit_safely(db, batch, idempotent=False)
                except Exception as exc:  # noqa: BLE001  (the database is down: spool, never drop)
                    self._went_down(exc)
                else:
                    self._came_back()
                    self._leases_done(batch, stuck=False)
                    for entry in batch:
                        entry.done = True
                    if self._spooled:
                        try:
                            self._replay(db)
                        except Exception as exc:  # noqa: BLE001  (the spool stays; retried later)
                            self._went_down(exc)
                    return
            self._leases_done(batch, stuck=True)
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

    def _commit_safely(self, db, batch, idempotent):
        """Commit the batch; when the database refuses it for its data, commit it row by row and
        quarantine the rows it refuses. Raises only when the database is down (retry them all)."""
        try:
            self._commit(db, batch, idempotent)
            return
        except Exception as exc:  # noqa: BLE001
            if not refused(exc) or not batch:
                raise
        for entry in batch:  # the batch was rolled back: none of its rows is in
            try:
                self._commit(db, [entry], idempotent=True)  # a request id already there is no error
            except Exception as exc:  # noqa: BLE001
                if not refused(exc):
                    raise
                self._quarantine(db, entry, exc)

    def _commit(self, db, batch, idempotent):
        """Rows, key spend and hold releases in one transaction (all or nothing)."""
        if not batch:
            return
        sql = _sql()
        with db.engine.begin() as connection:
            if idempotent:
                fresh = [e for e in batch if insert_new(connection, db, e.row)]
            else:
                connection.execute(sql.insert_rows, [e.row for e in batch])
                fresh = batch
            rollup.add(connection, [e.row for e in fresh])  # the daily roll-up: the new rows only
            per_target = {}
            for entry in fresh:
                row = entry.row
                for target, period in budgets.period_targets(entry):
                    if target not in per_target:
                        budgets.reset_if_due(connection, target, period)  # the cost lands in the new period
                key = key_of(row)
                for target in ([key] if key is not None else []) + level_targets(row):
                    per_target[target] = per_target.get(target, 0.0) + row["cost"]
            by_kind = {}
            for (kind, who), cost in per_target.items():
                if cost:
                    by_kind.setdefault(kind, []).append({"k": who, "c": cost})
            for kind, spent in by_kind.items():
                connection.execute(sql.add_spend[kind], spent)
            budget_leases.take_costs(connection, fresh)
            for entry in batch:
                row, hold = entry.row, entry.hold
                if hold:
                    held = connection.execute(sql.drop_hold, {"r": row["request_id"]}).first()
                    if held is not None:
                        for target in budgets.held_targets(held.levels, row):
                            budgets.release(connection, target, hold)

    def _quarantine(self, db, entry, exc):
        """A row the database refuses: kept whole in the quarantine file (one log line, a count),
        and a placeholder row with its key and cost takes its place, so the key is still charged
        and its hold settled."""
        request_id = entry.row.get("request_id") if isinstance(entry.row, dict) else None
        self._keep({"row": entry.row, "hold": entry.hold, "reset": entry.reset, "error": describe(exc)})
        log.error("spend: the database refused the row of request %s (%s); it is kept in %s and "
                  "the rest is committed", _short(request_id), describe(exc),
                  os.path.join(self.spool_dir, QUARANTINE_FILE))
        try:
            self._commit(db, [_Entry(placeholder_row(entry.row), entry.hold, entry.reset)], idempotent=True)
        except Exception as again:  # noqa: BLE001
            if not refused(again):
                raise
            log.error("spend: not even a placeholder for request %s could be written (%s)",
                      _short(request_id), describe(again))

    # -- budget holds -----------------------------------------------------------------------------

    def hold(self, rules, request_id, amount, seconds, levels=()):
        """Reserve `amount` of every budget the call must fit (the key's when it has one, and each
        level's with `max_budget`) in one transaction: all or none (gateway/spend/budgets.py).
        (True, None) when admitted, else (False, Balance) of the first budget that refused. A key
        deleted since it was cached is refused (401)."""
        targets = budgets.targets_of(rules, levels)
        if not targets:
            return True, None
        if self.asynchronous is None:
            self.asynchronous = cooperative()
        try:
            if self.asynchronous and self.leases.hold(self._open_db, targets, request_id, amount, seconds,
                                                      rules, levels):
                if self.leases.fresh:
                    self._journal_leases()
                    self._wake_flusher()  # its timer gives the lease back once it stops admitting
                return True, None
            db = self._open_db()
            for attempt in (1, 2):
                refusal = budgets.take(db, self.soft, targets, request_id, amount, seconds, rules)
                if refusal is None:
                    return True, None
                target, found = refusal
                if attempt == 1 and found is not None and self.sweep(db, target):
                    continue  # a dead worker's hold just expired: try once more
                return False, found
        except errors.GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("budget hold failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailableError(
                "The budget store is unavailable, so a call with a budget cannot be admitted; "
                "retry shortly.", code="budget_store_unavailable", headers={"Retry-After": "2"}) from exc
        return False, Balance(0.0, 0.0, 0.0)

    def _journal_leases(self):
        """Journal the leases just taken: a replay of this journal after a crash gives them back."""
        lines = []
        for lease_id in self.leases.fresh:
            self._lease_lines[lease_id] = line = orjson.dumps({"lease": lease_id}) + b"\n"
            lines.append(line)
        self.leases.fresh = []
        try:
            self._append_bytes(b"".join(lines))
        except OSError:
            pass  # no journal: a crash leaves these leases to expire

    def _leases_done(self, batch, stuck):
        """The batch's rows were committed (or, `stuck`, set aside: their leases then expire)."""
        for entry in batch:
            if entry.lease:
                self.leases.committed(entry.lease, stuck)

    def _give_back_leases(self, db=None):
        """Give back the leases that admit no more and whose rows are all committed."""
        due = self.leases.due()
        if not due or time.monotonic() < self._down_until:
            return
        try:
            self.leases.give_back(db or self._open_db(), due)
        except Exception as exc:  # noqa: BLE001  (they expire, or go back on the next pass)
            log.warning("spend: budget leases not given back yet (%s)", type(exc).__name__)
            return
        for lease in due:
            self._lease_lines.pop(lease.id, None)

    def sweep(self, db, target=None):
        """Release expired holds (their worker died mid-call); returns how many. `target`: only
        holds of that key (as key_of names it) or level ((kind, id))."""
        return budgets.sweep(db, target)

    def _commit_file(self, db, path, dead=False):
        """Commit every row of a journal file, each request id once; lines that are no entry are
        quarantined. `dead`: the journal of a process that died, whose calls still in flight (a
        start entry, no row) get a `worker_died` row."""
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
        batch, starts, ended, leases = [], {}, set(), []
        for line in lines:
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                if "row" in item:
                    entry = _Entry(revive(item["row"]), item.get("hold") or 0.0, item.get("reset"),
                                   _lease_ids(item.get("lease")))
                    batch.append(entry)
                    ended.add(entry.row["request_id"])
                elif "start" in item:
                    starts[item["start"]["request_id"]] = item
                elif "end" in item:
                    ended.add(item["end"])
                elif isinstance(item.get("lease"), str):
                    leases.append(item["lease"])
                else:
                    raise ValueError("not a journal entry")
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._keep({"line": line.decode("utf-8", "replace"), "error": type(exc).__name__})
                log.error("spend: a line of journal %s is no entry (%s); it is kept in %s", path,
                          type(exc).__name__, os.path.join(self.spool_dir, QUARANTINE_FILE))
        if dead and starts:
            ended_at = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
            for request_id, item in starts.items():
                if request_id in ended:
                    continue
                try:
                    batch.append(_Entry(clean_row(died_row(item["start"], ended_at)), item.get("hold") or 0.0))
                except (ValueError, TypeError, AttributeError) as exc:
                    self._keep({"start": item, "error": type(exc).__name__})
        for start in range(0, len(batch), BATCH):
            self._commit_safely(db, batch[start:start + BATCH], idempotent=True)
        if dead and leases:  # its rows have taken their costs: what is left goes back
            budget_leases.give_back(db, leases)
        return len(batch)

    def _replay(self, db):
        """Commit journaled rows (each request id once); files are removed once committed. A file
        that cannot be read is left and the next one replayed; a database that is down stops it."""
        for path, fd, ours in self._claimable():
            try:
                count = self._commit_file(db, path, dead=not ours and path.endswith(LIVE_SUFFIX))
            except OSError as exc:
                log.error("spend: cannot read journal %s: %s", path, type(exc).__name__)
                if not ours:
                    os.close(fd)
                continue
            except Exception:
                if not ours:
                    os.close(fd)  # the file stays (renamed): the next replay claims it again
                raise
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

    def logs(self, limit=1000, **filters):
        """Rows, newest first, filtered (the query is gateway.spend.reports.logs: `key_hash` finds the
        rows of the key it names now, before any /key/regenerate included, and the rows made with it)."""
        from gateway.spend import reports
        return reports.logs(self._open_db(), limit=limit, **filters)


def _after_fork():
    for ledger in list(_LEDGERS):
        ledger.forget_parent()
        ledger.leases.forget()


def _lease_ids(value):
    """A journaled row's lease ids, or None."""
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return None


os.register_at_fork(after_in_child=_after_fork)


def _short(text):
    """Client-influenced text for a log line: one line, bounded."""
    return repr(text)[:80]
