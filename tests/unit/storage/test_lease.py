"""The background jobs' lease (gateway/storage/lease.py) and the jobs under it (jobs.py), on SQLite
and PostgreSQL: one holder at a time, expiry hands the lease over with the token raised, a stale
holder's fenced write is refused, a slot runs once across leader changes, and retention deletes
only old rows, in batches, never the daily roll-ups."""

import contextlib
import logging
import threading
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select

from gateway.spend import retention
from gateway.storage import Database
from gateway.storage.jobs import RUNS
from gateway.storage.jobs import Job
from gateway.storage.jobs import Jobs
from gateway.storage.lease import Lease
from gateway.storage.lease import LeaseLost
from gateway.storage.models import SpendDaily
from gateway.storage.models import SpendRow
from tests.pg import schema_url as pg_schema

SHORT = 0.4  # seconds: a lease short enough to watch expire


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A migrated database nobody else uses: a SQLite file, or a PostgreSQL schema of its own."""
    with contextlib.ExitStack() as stack:
        sqlite = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        url = sqlite if request.param == "sqlite" else stack.enter_context(pg_schema())
        database = Database(url)
        database.migrate()
        yield database
        database.engine.dispose()


def _until(condition, timeout=5.0):
    """Poll `condition` until it answers something true; that answer."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return found


def _runs(db):
    with db.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(RUNS).order_by(RUNS.c.job, RUNS.c.slot))]


def test_of_two_holders_one_wins_and_renewing_keeps_its_token(db):
    a, b = Lease(db, "jobs", 30, "host/1/a"), Lease(db, "jobs", 30, "host/2/b")
    assert a.acquire() == 1
    assert b.acquire() is None and b.held() is None
    assert a.acquire() == 1 and a.held() == 1  # a renewal: same holder, same token


def test_an_expired_lease_goes_to_the_next_holder_with_the_token_raised(db):
    a, b = Lease(db, "jobs", SHORT, "host/1/a"), Lease(db, "jobs", SHORT, "host/2/b")
    assert a.acquire() == 1
    started = time.monotonic()
    assert _until(b.acquire) == 2
    assert time.monotonic() - started >= SHORT * 0.8  # not before a's lease ran out
    assert a.acquire() is None and a.held() is None
    b.release()  # a clean stop hands it over at once
    assert a.acquire() == 3


def test_a_stale_holders_fenced_write_is_refused_and_writes_nothing(db):
    a, b = Lease(db, "jobs", SHORT, "host/1/a"), Lease(db, "jobs", SHORT, "host/2/b")
    old = a.acquire()
    _until(b.acquire)  # a was paused past its lease; b took over
    row = {"job": "j", "token": old, "holder": a.holder, "started_at": 0.0}
    with pytest.raises(LeaseLost):
        with a.fenced(old) as connection:
            connection.execute(insert(RUNS).values(slot=1, **row))
    with b.fenced(b.token) as connection:
        connection.execute(insert(RUNS).values(slot=2, **{**row, "token": b.token, "holder": b.holder}))
    assert [(r["slot"], r["token"]) for r in _runs(db)] == [(2, old + 1)]


def test_a_takeover_waits_for_a_fenced_write_in_progress(db):
    # The fence locks the lease row: a worker taking over after the lease ran out does so only
    # once the old holder's transaction has ended, never between its check and its commit.
    a, b = Lease(db, "jobs", SHORT, "host/1/a"), Lease(db, "jobs", SHORT, "host/2/b")
    token = a.acquire()
    taken = {}

    def take_over():
        taken["token"] = _until(b.acquire)
        taken["at"] = time.monotonic()

    with a.fenced(token) as connection:
        thread = threading.Thread(target=take_over)
        thread.start()
        time.sleep(SHORT * 2)  # a's lease runs out while its write is in progress (the point of the test)
        connection.execute(insert(RUNS).values(job="j", slot=1, token=token, holder=a.holder, started_at=0.0))
        committed = time.monotonic()
    thread.join(10)
    assert taken["token"] == token + 1 and taken["at"] >= committed
    assert [r["slot"] for r in _runs(db)] == [1]


def test_a_slot_runs_once_across_leader_changes(db):
    ran = []
    job = Job("count", 60, lambda fenced: ran.append(1) or 7)
    first, second = Jobs(lambda: db, [job], SHORT, "host/1/a"), Jobs(lambda: db, [job], SHORT, "host/2/b")
    now = 6000.0  # slot 100
    assert first.keep() == 1 and second.keep() is None
    assert first.run_due(now) == 1 and second.run_due(now) == 0
    assert first.run_due(now + 1) == 0  # the same slot again: nothing
    assert first.describe() == {"leader": True, "lease_seconds": SHORT, "leases": {"background-jobs": 1},
                                "jobs": ["count"]}
    assert _until(second.keep) == 2  # the first leader stopped renewing: the second takes over
    assert first.run_due(now + 61) == 0  # no longer the leader: runs nothing
    assert second.run_due(now) == 0  # slot 100 ran already (under the first leader)
    assert second.run_due(now + 61) == 1
    assert len(ran) == 2
    runs = _runs(db)
    assert [(r["slot"], r["token"], r["rows"]) for r in runs] == [(100, 1, 7), (101, 2, 7)]
    assert all(r["finished_at"] >= r["started_at"] for r in runs)
    assert runs[0]["finished_at"] <= runs[1]["started_at"]


def test_a_run_whose_lease_is_lost_midway_writes_nothing_more(db):
    other = Lease(db, "background-jobs", SHORT, "host/2/b")

    def slow(fenced):
        _until(other.acquire)  # this leader stalls past its lease and another worker takes over
        with fenced() as connection:
            connection.execute(insert(RUNS).values(job="stale", slot=1, token=0, holder="x", started_at=0.0))
        return 1

    jobs = Jobs(lambda: db, [Job("slow", 60, slow)], SHORT, "host/1/a")
    assert jobs.keep() == 1
    assert jobs.run_due(6000.0) == 0
    runs = _runs(db)
    assert [(r["job"], r["finished_at"]) for r in runs] == [("slow", None)]  # begun, cut short, not redone


def test_a_database_outage_is_said_once_and_never_raises(caplog):
    def down():
        raise ConnectionError("database down")

    jobs = Jobs(down, [Job("j", 60, lambda fenced: 0)], 3)
    with caplog.at_level(logging.DEBUG, logger="gateway.jobs"):
        for _ in range(3):
            assert jobs.keep() is None and jobs.run_due() == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "ConnectionError" in warnings[0].getMessage()
    assert jobs.describe()["leader"] is False


def _spend(request_id, start):
    return {"request_id": request_id, "call_type": "chat", "status": "success", "cost": 0.01,
            "start_time": start, "end_time": start}


def test_retention_deletes_old_rows_in_batches_and_keeps_the_daily_rollups(db):
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    with db.engine.begin() as connection:
        rows = [_spend(f"old-{i}", old + timedelta(seconds=i)) for i in range(7)]
        connection.execute(insert(SpendRow.__table__), rows + [_spend(f"new-{i}", recent) for i in range(3)])
        connection.execute(insert(SpendDaily.__table__), [{"day": old.date().isoformat(), "dims": "d", "requests": 7,
                                                          "prompt_tokens": 0, "completion_tokens": 0,
                                                          "total_tokens": 0, "spend": 0.07}])
    batches = []
    job = Job("spend_log_retention", 3600,
              lambda fenced: retention.purge(lambda: batches.append(1) or fenced(), 30 * 86400, batch=3))
    jobs = Jobs(lambda: db, [job], 30, "host/1/a")
    assert jobs.keep() == 1 and jobs.run_due() == 1
    assert len(batches) == 3  # 3 + 3 + 1: each its own short transaction
    with db.engine.connect() as connection:
        kept = connection.execute(select(SpendRow.__table__.c.request_id).order_by(SpendRow.__table__.c.request_id))
        assert [r[0] for r in kept] == ["new-0", "new-1", "new-2"]
        assert connection.execute(select(func.sum(SpendDaily.__table__.c.requests))).scalar() == 7
    assert [r["rows"] for r in _runs(db)] == [7]


def test_every_other_worker_follows_a_finished_run_once(db):
    seen = []
    job = Job("checks", 60, lambda fenced: (2, {"d1": [-5.0, "upstream answered 500"]}), seen.append)
    leader, follower = Jobs(lambda: db, [job], 30, "host/1/a"), Jobs(lambda: db, [job], 30, "host/2/b")
    assert leader.keep() == 1 and follower.keep() is None
    assert follower.follow() == 0  # nothing ran yet
    assert leader.run_due(6000.0) == 1
    assert leader.follow() == 0  # its own run
    assert follower.follow() == 1 and follower.follow() == 0  # once
    assert seen == [{"d1": [-5.0, "upstream answered 500"]}]
    assert [(r["rows"], r["detail"]) for r in _runs(db)] == [(2, '{"d1":[-5.0,"upstream answered 500"]}')]
