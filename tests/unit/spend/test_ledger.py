"""The ledger against bad rows, crashes and key changes (issue #11), on SQLite and on the real
PostgreSQL: rows the database refuses are quarantined while the rest commit; journals are never
held by a leaked descriptor; a dead worker's calls in flight get a row; spend and holds follow the
key across /key/regenerate; soft and strict budgets."""

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from datetime import datetime
from datetime import timezone

import orjson
import pytest
from sqlalchemy import select

from gateway import errors
from gateway.storage import Database
from gateway.storage.models import BudgetHold
from gateway.storage.models import SpendRow
from gateway.storage.models import VirtualKey
from gateway.spend.ledger import QUARANTINE_FILE
from gateway.spend.ledger import Ledger
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from gateway.spend.meter import SpendTracker
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401

INT_MAX = 2 ** 31 - 1


def _key(service, **rules):
    return service.lookup(service.generate(rules)["key"])


def _row(rules, request_id, cost, **extra):
    now = datetime.now(timezone.utc)
    return {"request_id": request_id, "key_id": rules.key_id if rules else None,
            "key_hash": rules.hash if rules else None, "key_alias": None,
            "user_id": None, "team_id": None, "call_type": "chat", "model_group": "m", "deployment_id": "d",
            "provider": "openai", "model": "gpt-4o", "prompt_tokens": 3, "completion_tokens": 4,
            "total_tokens": 7, "cost": cost, "estimated": False, "cache_hit": False, "stream": False,
            "status": "success", "start_time": now, "end_time": now, **extra}


def _start(rules, request_id, **extra):
    return {"request_id": request_id, "key_id": rules.key_id if rules else None,
            "key_hash": rules.hash if rules else None, "key_alias": None, "user_id": None, "team_id": None,
            "call_type": "chat", "model_group": "m", "stream": True,
            "start_time": datetime.now(timezone.utc), **extra}


def _key_row(db, key_id):
    with db.session() as session:
        return session.execute(select(VirtualKey).where(VirtualKey.id == key_id)).scalar_one()


def _rows(db):
    with db.session() as session:
        return {r.request_id: r for r in session.scalars(select(SpendRow))}


def _files(spool):
    return sorted(os.listdir(spool)) if os.path.isdir(spool) else []


def _journal(spool, name, items):
    os.makedirs(spool, exist_ok=True)
    with open(os.path.join(spool, name), "wb") as handle:
        for item in items:
            handle.write(item if isinstance(item, bytes) else orjson.dumps(item) + b"\n")


# ---- item 3: one bad row never stops the ledger ------------------------------------------------

@pytest.mark.parametrize("asynchronous", [True, False], ids=["journal", "direct"])
def test_a_nul_model_row_and_huge_token_counts_do_not_stop_later_rows(db, service, tmp_path, asynchronous):
    """PostgreSQL refuses NUL in text and integers past 2^31; SQLite integers past 2^63. The rows
    are made valid where they are written, so they and every later row commit."""
    rules = _key(service)
    spool = str(tmp_path / "spool")
    ledger = Ledger(lambda: db, spool, asynchronous=asynchronous)
    ledger.write(_row(rules, "nul", 0.5, model_group="nul\x00model", model="x\x00", user_id="\x00"), 0.0, rules)
    ledger.write(_row(rules, "big", 0.25, prompt_tokens=2 ** 31, completion_tokens=2 ** 63,
                      total_tokens=2 ** 63 + 2 ** 31), 0.0, rules)
    ledger.write(_row(rules, "long", 0.125, model_group="m" * 5000, key_alias="a" * 300), 0.0, rules)
    for i in range(3):
        ledger.write(_row(rules, f"later{i}", 1.0), 0.0, rules)
    ledger.flush()
    rows = _rows(db)
    assert sorted(rows) == ["big", "later0", "later1", "later2", "long", "nul"]
    assert "\x00" not in rows["nul"].model_group and rows["nul"].model_group.startswith("nul")
    assert (rows["big"].prompt_tokens, rows["big"].completion_tokens, rows["big"].total_tokens) == \
        (INT_MAX, INT_MAX, INT_MAX)
    assert len(rows["long"].model_group) == 255 and len(rows["long"].key_alias) == 255
    assert _key_row(db, rules.key_id).spend == pytest.approx(3.875)
    assert _files(spool) == []


def test_a_row_the_database_refuses_is_quarantined_and_the_batch_commits(db, service, tmp_path, caplog):
    """A row no cleaning can save (here: no call type, a NOT NULL column) is set aside in the
    quarantine file with one log line and a count; its neighbours in the batch commit, the key is
    charged, and the flusher does not take the database for down."""
    rules = _key(service, max_budget=100.0)
    spool = str(tmp_path / "spool")
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    counted = []
    ledger.on_quarantine = counted.append
    assert ledger.hold(rules, "bad", 2.0, 60)[0]
    ledger.write(_row(rules, "before", 1.0), 0.0, rules)
    ledger.write(_row(rules, "bad", 0.5, call_type=None), 2.0, rules)
    ledger.write(_row(rules, "after", 1.0), 0.0, rules)
    with caplog.at_level(logging.WARNING, logger="gateway.spend.meter"):
        ledger.flush()
    assert ledger._down_until == 0  # the database was never taken for down
    ledger.write(_row(rules, "next", 1.0), 0.0, rules)
    ledger.flush()
    rows = _rows(db)
    assert sorted(rows) == ["after", "bad", "before", "next"]
    assert (rows["bad"].status, rows["bad"].cost) == ("quarantined", 0.5)  # its place: one row per id
    key = _key_row(db, rules.key_id)
    assert key.spend == pytest.approx(3.5) and key.reserved == pytest.approx(0.0, abs=1e-12)
    kept = [orjson.loads(line) for line in open(os.path.join(spool, QUARANTINE_FILE), "rb")]
    assert [k["row"]["request_id"] for k in kept] == ["bad"] and kept[0]["row"]["call_type"] is None
    assert "IntegrityError" in kept[0]["error"]
    lines = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(lines) == 1 and "bad" in lines[0]
    assert counted == [1]
    assert _files(spool) == [QUARANTINE_FILE]


def test_replay_goes_past_a_bad_journal_and_bad_lines(db, service, tmp_path):
    """Dead workers' journals: one with a refused row and a torn line, one of good rows (from before
    key ids were journaled). Every good row commits; the bad ones wait in quarantine; no journal is left."""
    rules = _key(service)
    spool = str(tmp_path / "spool")
    old_style = _row(rules, "old", 0.25)
    del old_style["key_id"]
    _journal(spool, "spend-4194001.jsonl", [
        {"row": _row(rules, "a", 1.0), "hold": 0.0, "reset": None},
        {"row": _row(rules, "poison", 1.0, status=None), "hold": 0.0, "reset": None},
        b"[1, 2]\n",
        {"row": _row(rules, "b", 1.0), "hold": 0.0, "reset": None},
        b'{"row": {"request_id": "torn", "co'])
    _journal(spool, "spend-4194002.jsonl", [{"row": _row(rules, "c", 1.0), "hold": 0.0, "reset": None},
                                             {"row": old_style, "hold": 0.0, "reset": None}])
    ledger = Ledger(lambda: db, spool)
    ledger._replay(db)
    rows = _rows(db)
    assert sorted(rows) == ["a", "b", "c", "old", "poison"] and rows["poison"].status == "quarantined"
    assert _key_row(db, rules.key_id).spend == pytest.approx(4.25)
    assert _files(spool) == [QUARANTINE_FILE]
    kept = (tmp_path / "spool" / QUARANTINE_FILE).read_bytes().splitlines()
    assert len(kept) == 3  # the refused row, the line that is no entry, the torn line


def test_a_database_that_is_down_is_still_retried_not_quarantined(db, service, tmp_path):
    rules = _key(service)
    spool = str(tmp_path / "spool")
    down = {"now": True}

    def open_db():
        if down["now"]:
            from sqlalchemy.exc import OperationalError
            raise OperationalError("connect", {}, ConnectionRefusedError("refused"))
        return db
    ledger = Ledger(open_db, spool, asynchronous=True)
    ledger.write(_row(rules, "kept", 1.0), 0.0, rules)
    ledger.flush()
    assert ledger._down_until > 0 and QUARANTINE_FILE not in _files(spool)
    down["now"], ledger._down_until = False, 0
    ledger.write(_row(rules, "then", 1.0), 0.0, rules)
    ledger.flush()
    assert sorted(_rows(db)) == ["kept", "then"] and _files(spool) == []


def test_journal_descriptors_are_close_on_exec(tmp_path):
    import fcntl
    ledger = Ledger(lambda: None, str(tmp_path), asynchronous=True)
    ledger.begin(_start(None, "x"))
    fd = ledger._journal[1]
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert not os.get_inheritable(fd)


def _journal_fork_and_die(spool, row, child_ready, release_child):
    """A worker that journals a row, forks a long-lived child (a helper process, say), then dies."""
    ledger = Ledger(lambda: None, spool, asynchronous=True)
    ledger.write(row)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_linger, args=(child_ready, release_child), daemon=False)
    child.start()
    child_ready.wait(30)
    os._exit(0)


def _linger(ready, release):
    ready.set()
    release.wait(60)


def test_a_child_of_a_dead_worker_does_not_keep_its_journal_locked(db, service, tmp_path):
    """flock locks belong to the open file: a forked child holding a copy of the journal's
    descriptor kept a dead worker's journal locked, so it was never replayed."""
    rules = _key(service)
    spool = str(tmp_path / "spool")
    context = multiprocessing.get_context("fork")
    child_ready, release_child = context.Event(), context.Event()
    worker = context.Process(target=_journal_fork_and_die,
                             args=(spool, _row(rules, "orphan", 0.5), child_ready, release_child))
    worker.start()
    try:
        # Not worker.join(): the child holds a copy of the worker's sentinel pipe as well.
        deadline = time.monotonic() + 30
        while worker.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.exitcode == 0 and child_ready.is_set()  # the worker is gone, its child lives
        ledger = Ledger(lambda: db, spool)
        ledger._replay(db)
        assert sorted(_rows(db)) == ["orphan"] and _files(spool) == []
    finally:
        release_child.set()


# ---- item 17: a dead worker's calls in flight get a row -----------------------------------------

def _calls_then_die(url, spool, rules, done):
    """A gevent-like worker: four calls start (one budgeted), two end, the flusher commits in
    between; then the process is killed with two calls in flight."""
    db = Database(url)
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    ledger.begin(_start(rules, "held"))
    assert ledger.hold(rules, "held", 2.0, 600)[0]
    ledger.begin(_start(rules, "held"), 2.0)  # the hold joins the start entry
    for name in ("ends-early", "ends-late"):
        ledger.begin(_start(rules, name))
    ledger.begin(_start(rules, "cut", model_group="cut\x00\ud800" + "m" * 300))  # client text
    ledger.begin(_start(rules, "refused"))
    ledger.cancel("refused")  # refused before routing: it never gets a row
    ledger.write(_row(rules, "ends-early", 1.0), 0.0, rules)
    ledger.flush()  # commits ends-early; the new journal must still know of held, ends-late and cut
    ledger.write(_row(rules, "ends-late", 1.0), 0.0, rules)  # journaled, never flushed
    done.set()
    os.kill(os.getpid(), 9)


def test_a_killed_workers_calls_in_flight_get_exactly_one_row_each(db, db_url, service, tmp_path):
    rules = _key(service, max_budget=100.0)
    spool = str(tmp_path / "spool")
    context = multiprocessing.get_context("fork")
    done = context.Event()
    worker = context.Process(target=_calls_then_die, args=(db_url, spool, rules, done))
    worker.start()
    worker.join(60)
    assert done.is_set() and worker.exitcode == -9
    assert _key_row(db, rules.key_id).reserved == pytest.approx(2.0)
    ledger = Ledger(lambda: db, spool)
    ledger._replay(db)
    ledger._replay(db)  # twice: still one row per request id
    rows = _rows(db)
    assert sorted(rows) == ["cut", "ends-early", "ends-late", "held"]
    for name in ("cut", "held"):
        assert (rows[name].status, rows[name].estimated, rows[name].cost) == ("worker_died", True, 0.0)
        assert rows[name].key_id == rules.key_id and rows[name].stream is True
    assert rows["cut"].model_group.startswith("cut\ufffd?m") and len(rows["cut"].model_group) == 255
    assert rows["ends-late"].status == "success"
    key = _key_row(db, rules.key_id)
    assert key.spend == pytest.approx(2.0) and key.reserved == pytest.approx(0.0, abs=1e-12)
    with db.session() as session:
        assert session.scalars(select(BudgetHold)).all() == []
    assert _files(spool) == []


def test_a_live_workers_own_start_entries_never_become_rows(db, service, tmp_path):
    """Start entries of our own process stay entries: an outage's replay writes only finished rows."""
    rules = _key(service)
    spool = str(tmp_path / "spool")
    down = {"now": True}

    def open_db():
        if down["now"]:
            raise RuntimeError("database down")
        return db
    ledger = Ledger(open_db, spool, asynchronous=True)
    ledger.begin(_start(rules, "running"))
    ledger.begin(_start(rules, "done"))
    ledger.write(_row(rules, "done", 1.0), 0.0, rules)
    ledger.flush()  # down: set aside
    down["now"], ledger._down_until = False, 0
    ledger._replay(db)
    assert sorted(_rows(db)) == ["done"]
    ledger.write(_row(rules, "running", 1.0), 0.0, rules)
    ledger.flush()
    assert sorted(_rows(db)) == ["done", "running"] and _files(spool) == []


# ---- item 4: spend and holds follow the key across /key/regenerate ---------------------------------

def test_calls_in_flight_during_a_regenerate_settle_onto_the_key(db, service, tmp_path):
    old = _key(service, max_budget=1.0)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    assert ledger.hold(old, "in-flight", 0.4, 60)[0]
    new_key = service.regenerate(old.hash)["key"]
    new = service.lookup(new_key)
    assert new.key_id == old.key_id and new.hash != old.hash
    # Another worker still has the old key cached: its next call is held (and charged) on the key.
    assert ledger.hold(old, "cached-window", 0.4, 60)[0]
    assert _key_row(db, old.key_id).reserved == pytest.approx(0.8)
    assert not ledger.hold(old, "too-much", 0.4, 60)[0]
    ledger.write(_row(old, "in-flight", 0.25), 0.4, old)
    ledger.write(_row(old, "cached-window", 0.125), 0.4, old)
    ledger.write(_row(new, "after", 0.0625), 0.0, new)
    key = _key_row(db, old.key_id)
    assert key.spend == pytest.approx(0.4375) and key.reserved == pytest.approx(0.0, abs=1e-12)
    info = service.info(new_key)
    assert info["spend"] == pytest.approx(0.4375) and info["reserved"] == pytest.approx(0.0, abs=1e-12)
    logs = ledger.logs(key_hash=new.hash)
    assert sorted(r["request_id"] for r in logs) == ["after", "cached-window", "in-flight"]
    assert sum(r["spend"] for r in logs) == pytest.approx(key.spend)
    assert sorted(r["request_id"] for r in ledger.logs(key_id=old.key_id)) == ["after", "cached-window",
                                                                               "in-flight"]
    # The old hash finds the rows made under it (the key that hash named is gone).
    assert sorted(r["request_id"] for r in ledger.logs(key_hash=old.hash)) == ["cached-window", "in-flight"]


def test_a_deleted_keys_call_is_refused_not_admitted_as_unbudgeted(db, service, tmp_path):
    rules = _key(service, max_budget=1.0)
    service.delete([rules.hash])
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    with pytest.raises(errors.AuthenticationError):
        ledger.hold(rules, "after-delete", 0.1, 60)


def test_upgrade_from_0002_gives_rows_and_holds_their_key_id(new_db_url):
    from alembic import command
    from alembic.config import Config

    from gateway.storage import MIGRATIONS
    url = new_db_url()
    old = Database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002_spend")
        connection.commit()
    with old.engine.begin() as connection:
        for statement in _old_rows(datetime.now(timezone.utc)):
            connection.execute(statement)
    old.engine.dispose()
    new = Database(url)
    new.migrate()
    try:
        with new.session() as session:
            assert session.scalars(select(SpendRow.key_id)).all() == [7]
            assert session.scalars(select(BudgetHold.key_id)).all() == [7]
            assert session.scalars(select(VirtualKey.holds)).all() == [1]
        assert new.at_head()
    finally:
        new.engine.dispose()


def _old_rows(now):
    """A key, a row and a hold as revision 0002 stores them (no key ids yet)."""
    from sqlalchemy import column
    from sqlalchemy import insert
    from sqlalchemy import table

    def old(name, **values):
        return insert(table(name, *(column(n) for n in values))).values(**values)
    digest = "h" * 64
    return [
        old("gateway_keys", id=7, key_hash=digest, key_hint="sk-...abcd", aliases="{}", config="{}",
            metadata="{}", spend=1.5, reserved=0.5, blocked=False, created_at=now, updated_at=now,
            max_budget=10.0),
        old("gateway_spend", request_id="r1", key_hash=digest, call_type="chat", prompt_tokens=1,
            completion_tokens=1, total_tokens=2, cost=1.5, estimated=False, cache_hit=False, stream=False,
            status="success", start_time=now, end_time=now),
        old("gateway_budget_holds", request_id="r2", key_hash=digest, amount=0.5, expires_at=now)]


# ---- budgets users can live with: soft (default) and strict ----------------------------------------

def test_budget_mode_is_soft_by_default_and_anything_else_is_a_config_error():
    assert from_dict({}).general_settings.get("budget_mode") is None
    for mode in ("soft", "strict"):
        from_dict({"general_settings": {"budget_mode": mode}})
    with pytest.raises(ConfigError, match=r"general_settings\.budget_mode: must be `soft` or `strict`"):
        from_dict({"general_settings": {"budget_mode": "hard"}})


def test_soft_budget_serves_a_tiny_budget_keys_first_call_then_refuses(db, service, tmp_path):
    rules = _key(service, max_budget=1e-7)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    tracker = SpendTracker(ledger, None, 60)
    tracker.reserve(rules, "first", 0.01)  # nothing spent, nothing in flight: served
    with pytest.raises(errors.BudgetExceededError) as refused:
        tracker.reserve(rules, "second", 0.01)  # the first still holds budget
    message = refused.value.message
    assert message.startswith("Budget has been exceeded!")
    for amount in ("1e-07", "0.01"):
        assert amount in message
    assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
    ledger.write(_row(rules, "first", 0.004), 0.01, rules)
    with pytest.raises(errors.BudgetExceededError, match="^Budget has been exceeded!"):
        tracker.reserve(rules, "third", 0.01)  # spent past the budget: no more calls
    assert _key_row(db, rules.key_id).spend == pytest.approx(0.004)


def test_strict_budget_never_admits_a_call_that_does_not_fit(db, service, tmp_path):
    rules = _key(service, max_budget=1e-7)
    tracker = SpendTracker(Ledger(lambda: db, str(tmp_path / "spool"), budget_mode="strict"), None, 60)
    with pytest.raises(errors.BudgetExceededError, match="^Budget has been exceeded!"):
        tracker.reserve(rules, "first", 0.01)
    tracker.reserve(rules, "fits", 5e-8)


@pytest.mark.parametrize("mode,admitted", [("soft", 1), ("strict", 0)])
def test_concurrent_calls_past_the_budget_admit_at_most_one(make_db, service, tmp_path, mode, admitted):
    """20 threads, each with its own engine (as separate workers): no call fits the budget; soft
    admits exactly one (the key has budget left), strict none."""
    rules = _key(service, max_budget=0.5)
    ledgers = [Ledger(lambda d=make_db(migrate=False): d, str(tmp_path / "spool"), budget_mode=mode)
               for _ in range(4)]
    barrier = threading.Barrier(20)
    results = []

    def call(i):
        barrier.wait()
        results.append(ledgers[i % 4].hold(rules, f"h{i}", 1.0, 60)[0])
    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == admitted


def test_soft_budget_with_calls_in_flight_admits_only_what_fits(db, service, tmp_path):
    rules = _key(service, max_budget=1.0)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    assert ledger.hold(rules, "a", 0.6, 60)[0]
    admitted, balance = ledger.hold(rules, "b", 0.6, 60)
    assert not admitted and balance.left == pytest.approx(0.4)
    assert (balance.budget, balance.spent, balance.reserved) == (pytest.approx(1.0), 0.0, pytest.approx(0.6))
    ledger.write(_row(rules, "a", 0.5), 0.6, rules)
    assert ledger.hold(rules, "b", 0.6, 60)[0]  # nothing in flight, 0.5 of 1.0 spent: one more call
    assert not ledger.hold(rules, "c", 0.1, 60)[0]  # b holds 0.6: nothing fits beside it


# ---- through the app: two workers on one key store ------------------------------------------------

MASTER = "sk-master-ledger-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def workers(db_url, tmp_path, monkeypatch):
    """Two apps on one database, as two gateway instances without Redis (each its own local state, so
    a key change on one reaches the other only when its cache expires); key lookups stay cached for
    the test (the window in which a worker still knows a regenerated key by its old hash)."""
    from gateway.access import keys as key_module
    from gateway.app import create_app
    monkeypatch.setattr(key_module, "CACHE_SECONDS", 3600.0)
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.001,
                                                               "output_cost_per_token": 0.002}}],
        "general_settings": {"master_key": MASTER, "database_url": db_url,
                             "spend_spool_dir": str(tmp_path / "spool")}})
    apps = [create_app(dataclasses.replace(settings, router_settings={"local_state_path": str(tmp_path / name)}))
            for name in ("state-a.sqlite", "state-b.sqlite")]
    yield [app.test_client() for app in apps]
    for app in apps:
        app.extensions["gateway"].auth.keys.get().db.engine.dispose()


def _chat(client, key, **body):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "m", "messages": [{"role": "user", "content": "hello there"}],
                             "max_tokens": 5, **body})


def test_a_stream_in_flight_and_a_cached_old_key_settle_onto_the_regenerated_key(workers):
    first, second = workers
    key = first.post("/key/generate", json={"max_budget": 10.0}, headers=ADMIN).get_json()["key"]
    stream = _chat(first, key, stream=True)  # held, answer not yet read
    assert stream.status_code == 200
    new_key = second.post("/key/regenerate", json={"key": key}, headers=ADMIN).get_json()["key"]
    cached = _chat(first, key)  # the first worker still knows the old key: charged to the key all the same
    assert cached.status_code == 200
    cached.close()
    stream.get_data()
    stream.close()  # the stream's row, as gunicorn closes the response
    info = second.get("/key/info", headers=ADMIN, query_string={"key": new_key}).get_json()["info"]
    logs = second.get("/spend/logs", headers=ADMIN, query_string={"api_key": new_key}).get_json()
    assert len(logs) == 2 and {r["stream"] for r in logs} == {True, False}
    assert info["spend"] == pytest.approx(sum(r["spend"] for r in logs)) and info["spend"] > 0
    assert info["reserved"] == pytest.approx(0.0, abs=1e-12)


def test_a_deleted_keys_budgeted_call_is_refused_by_a_worker_that_still_knows_it(workers):
    first, second = workers
    key = first.post("/key/generate", json={"max_budget": 10.0}, headers=ADMIN).get_json()["key"]
    _chat(first, key).close()  # cached by the first worker
    second.post("/key/delete", json={"keys": [key]}, headers=ADMIN)
    refused = _chat(first, key)
    assert refused.status_code == 401, refused.get_data()
    assert refused.get_json()["error"]["code"] == "key_deleted"


def test_a_nul_model_name_gets_its_404_and_the_ledger_goes_on(workers):
    first, second = workers
    key = first.post("/key/generate", json={}, headers=ADMIN).get_json()["key"]
    unknown = first.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": "nul\x00model", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404
    unknown.close()
    for _ in range(3):
        _chat(first, key).close()
    logs = second.get("/spend/logs", headers=ADMIN, query_string={"api_key": key}).get_json()
    assert len(logs) == 4 and sum(r["status"] == "success" for r in logs) == 3
    assert [r["model_group"] for r in logs if r["status"] == "error"] == ["nul\ufffdmodel"]


def test_quarantined_rows_are_counted_in_metrics(workers):
    first, _ = workers

    def counted():
        text = first.get("/metrics", headers=ADMIN).get_data(as_text=True)
        lines = [line for line in text.splitlines() if line.startswith("gateway_spend_rows_quarantined_total")]
        return float(lines[0].split()[-1]) if lines else 0.0
    before = counted()
    first.application.extensions["gateway"].spend.ledger.on_quarantine(1)
    assert counted() == before + 1


def test_a_journal_taken_from_under_its_live_owner_stops_nothing(db, service, tmp_path):
    """Seen in the cluster tests: a process that found a live worker's new journal before its owner
    had locked it took it for a dead one's and moved it away; the owner's flusher then failed on
    every pass and committed nothing again. An owner whose journal is gone commits its rows from
    memory and starts a new one (whoever took the file replays it: a request id is written once)."""
    rules = _key(service)
    spool = str(tmp_path / "spool")
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    ledger.write(_row(rules, "first", 1.0), 0.0, rules)
    (journal,) = [name for name in _files(spool) if name.startswith("spend-")]
    os.rename(os.path.join(spool, journal), os.path.join(spool, "taken-elsewhere.jsonl"))
    ledger.flush()
    ledger.write(_row(rules, "second", 1.0), 0.0, rules)
    ledger.flush()
    assert sorted(_rows(db)) == ["first", "second"]



def test_a_journal_being_created_is_never_claimed_as_a_dead_ones(db, service, tmp_path, monkeypatch):
    """The race behind the test above: another process lists the spool directory between a new
    journal's creation and its owner's flock, finds it unlocked, and takes it for a dead process's
    (its calls in flight would get `worker_died` rows and their real rows be dropped as duplicates).
    A journal is created under a name no claimer looks at, locked, then renamed into place."""
    from gateway.spend import journal as journal_module
    rules = _key(service)
    spool = str(tmp_path / "spool")
    owner, claimer = Ledger(lambda: db, spool, asynchronous=True), Ledger(lambda: db, spool, asynchronous=True)
    claimed = []
    real_flock = journal_module.fcntl.flock

    def flock_after_a_claimer_looked(fd, operation):
        if operation == journal_module.fcntl.LOCK_EX and not claimed:  # the owner, about to lock
            claimed.append(claimer._claim_dead(sorted(os.listdir(spool)), set()))
        return real_flock(fd, operation)
    monkeypatch.setattr(journal_module.fcntl, "flock", flock_after_a_claimer_looked)
    owner.begin({"request_id": "running", "key_id": rules.key_id, "key_hash": rules.hash, "call_type": "chat",
                 "start_time": datetime.now(timezone.utc).isoformat()})
    monkeypatch.setattr(journal_module.fcntl, "flock", real_flock)
    assert claimed == [[]]  # the claimer saw the journal being made and left it alone
    assert claimer._claim_dead(sorted(os.listdir(spool)), set()) == []  # and once made, it is locked
    owner.write(_row(rules, "running", 1.0), 0.0, rules)
    owner.flush()
    rows = _rows(db)
    assert (rows["running"].status, rows["running"].cost) == ("success", 1.0)
