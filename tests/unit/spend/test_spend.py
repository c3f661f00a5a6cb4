"""Spend: prices, worst-case holds, the ledger (group commit, spool, replay) and budget holds, on
SQLite and on the real PostgreSQL; the stream meter; /spend/logs through the Flask app."""

import math
import os
import threading
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from types import SimpleNamespace

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy import update

from gateway import errors
from gateway.spend import meter as spend
from gateway.app import create_app
from gateway.routing.balancer import Deployment
from gateway.storage.models import Base
from gateway.storage.models import BudgetHold
from gateway.storage.models import SpendRow
from gateway.storage.models import VirtualKey
from gateway.telemetry.events import Observers
from gateway.spend.ledger import Ledger
from gateway.spend.ledger import _Entry
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from gateway.spend.meter import Meter
from gateway.spend.meter import SpendTracker
from gateway.wire.upstream import ChunkStream
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401
from gateway.routing.router import Outcome

MASTER = "sk-master-unit-0123456789"


def deployment(model="openai/gpt-4o", **params):
    settings = from_dict({"model_list": [{"model_name": "m", "litellm_params": {"model": model, "api_key": "x",
                                                                               **params}}]})
    from gateway import providers
    return Deployment(providers.build(settings.deployments[0]))


# ---- prices and worst cases -------------------------------------------------------------------

def test_table_price_and_per_deployment_override():
    d = deployment()
    assert (d.input_price, d.output_price) == (2.5e-06, 1e-05)
    assert spend.usage_cost(d, 1000, 100) == pytest.approx(1000 * 2.5e-06 + 100 * 1e-05)
    o = deployment(input_cost_per_token=0.5, output_cost_per_token=2)
    assert spend.usage_cost(o, 3, 4) == 3 * 0.5 + 4 * 2


def test_unknown_model_has_no_price_and_costs_nothing():
    d = deployment("openai/some-private-model")
    assert d.input_price is None
    assert spend.usage_cost(d, 1000, 1000) == 0.0


@pytest.mark.parametrize("value", [-1, "cheap", True])
def test_bad_price_stops_start_up_naming_the_path(value):
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.litellm_params\.input_cost_per_token"):
        deployment(input_cost_per_token=value)


def test_worst_case_uses_max_tokens_n_and_the_priciest_reachable_deployment():
    cheap = deployment(input_cost_per_token=1.0, output_cost_per_token=1.0)
    dear = deployment(input_cost_per_token=1.0, output_cost_per_token=10.0)
    body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 7, "n": 2}
    prompt = spend.prompt_token_bound(body)
    # every byte of text that reaches the model ("messages", "role", "user", "content", 40 x's),
    # 4 framing tokens for the one message, 8 for the reply's priming
    assert prompt == len("messages" "role" "user" "content") + 40 + 4 + 8
    assert spend.worst_case_cost([cheap, dear], "chat", body) == prompt * 1.0 + 14 * 10.0


def test_worst_case_without_max_tokens_is_bounded_by_the_model():
    d = deployment(input_cost_per_token=0.0, output_cost_per_token=1.0)
    d.max_output_tokens, d.max_input_tokens = 100, 1000
    assert spend.worst_case_cost([d], "chat", {"messages": []}) == 100
    assert spend.worst_case_cost([d], "chat", {"messages": [], "max_tokens": 10**6}) == 100
    d.max_output_tokens = None
    assert spend.worst_case_cost([d], "chat", {"messages": []}) == 1000 - spend.prompt_token_bound({"messages": []})
    d.max_input_tokens = None
    assert spend.worst_case_cost([d], "chat", {"messages": []}) == spend.DEFAULT_OUTPUT_BOUND
    assert spend.worst_case_cost([d], "embeddings", {"input": "abc"}) == 0


# ---- the stream meter -------------------------------------------------------------------------

class _Tracker:
    keep_text = False

    def __init__(self):
        self.finished = []
        self.observers = Observers()

    def finish(self, meter, record=True):
        self.finished.append((meter, record))


def _chunks(with_usage):
    base = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    yield {**base, "choices": [{"index": 0, "delta": {"content": "Hello there"}}],
           **({"usage": None} if with_usage else {})}
    yield {**base, "choices": [{"index": 0, "delta": {"content": " friend"}, "finish_reason": "stop"}],
           **({"usage": None} if with_usage else {})}
    if with_usage:
        yield {**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}


def _meter(body=None, stream=True):
    d = deployment(input_cost_per_token=0.01, output_cost_per_token=0.1)
    outcome = Outcome(group="m", deployment=d)
    tracker = _Tracker()
    meter = Meter(tracker, "req_1", None, "chat", body or {"messages": [{"role": "user", "content": "hi"}]}, stream)
    return meter, outcome, tracker


@pytest.mark.parametrize("client_asked", [True, False])
def test_stream_is_billed_from_upstream_usage_and_the_usage_chunk_shown_only_if_asked(client_asked):
    meter, outcome, tracker = _meter()
    upstream = ChunkStream(None, "chat", _chunks(with_usage=True))
    seen = list(meter.watch(outcome, upstream, client_asked))
    meter.close()
    assert (meter.prompt_tokens, meter.completion_tokens, meter.estimated) == (11, 3, False)
    assert meter.cost == pytest.approx(11 * 0.01 + 3 * 0.1)
    assert meter.status == "success"
    if client_asked:
        assert seen[-1]["usage"]["total_tokens"] == 14 and len(seen) == 3
    else:
        assert len(seen) == 2 and all("usage" not in c for c in seen)
    assert tracker.finished == [(meter, True)]


def test_stream_without_usage_is_estimated_and_marked():
    meter, outcome, _ = _meter()
    list(meter.watch(outcome, ChunkStream(None, "chat", _chunks(with_usage=False)), False))
    meter.close()
    assert meter.estimated is True
    assert meter.completion_tokens == (len("Hello there friend") + 3) // 4
    assert meter.row()["estimated"] is True


def test_disconnected_stream_is_billed_for_what_was_generated():
    meter, outcome, tracker = _meter()
    watched = meter.watch(outcome, ChunkStream(None, "chat", _chunks(with_usage=True)), False)
    iterator = iter(watched)
    next(iterator)  # the client read one chunk and went away
    iterator.close()
    watched.close()
    meter.close()
    assert meter.status == "client_disconnected"
    assert meter.estimated and meter.completion_tokens == (len("Hello there") + 3) // 4
    assert meter.cost > 0
    assert len(tracker.finished) == 1


def test_stream_closed_before_its_first_chunk_is_recorded_as_disconnected():
    meter, outcome, _ = _meter()
    meter.watch(outcome, ChunkStream(None, "chat", _chunks(with_usage=True)), False).close()
    meter.close()
    meter.close()  # idempotent
    assert meter.status == "client_disconnected"


def test_stream_error_is_recorded_as_error():
    meter, outcome, _ = _meter()

    def broken():
        yield from list(_chunks(False))[:1]
        raise errors.UpstreamConnectionError("broke")
    with pytest.raises(errors.UpstreamConnectionError):
        list(meter.watch(outcome, ChunkStream(None, "chat", broken()), False))
    meter.close()
    assert meter.status == "error"


def test_non_stream_answer_without_usage_is_estimated():
    meter, outcome, _ = _meter(stream=False)
    meter.bill_answer(outcome, {"choices": [{"message": {"content": "x" * 40}}]})
    assert meter.estimated and meter.completion_tokens == 10


# ---- prompt-cache prices and Anthropic's Messages usage ------------------------------------------

def test_cache_reads_and_writes_are_billed_at_their_prices():
    d = deployment("anthropic/claude-3-5-sonnet-20241022", api_base="http://127.0.0.1:9")
    assert (d.cache_read_price, d.cache_creation_price) == (pytest.approx(3e-7), pytest.approx(3.75e-6))
    # 100 prompt tokens: 30 read from the cache, 20 written to it, 50 plain
    assert spend.usage_cost(d, 100, 10, 30, 20) == pytest.approx(50 * 3e-6 + 30 * 3e-7 + 20 * 3.75e-6 + 10 * 15e-6)
    o = deployment(input_cost_per_token=1.0, output_cost_per_token=2.0, cache_read_input_token_cost=0.25)
    assert (o.cache_read_price, o.cache_creation_price) == (0.25, 1.0)  # unset: the input price


def test_openai_cached_tokens_are_billed_at_the_read_price():
    d = deployment(input_cost_per_token=1.0, output_cost_per_token=2.0, cache_read_input_token_cost=0.5)
    meter = Meter(_Tracker(), "r", None, "chat", {"messages": []}, False)
    meter.bill_answer(Outcome(group="m", deployment=d), {"choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 4}}})
    assert meter.cost == 6 * 1.0 + 4 * 0.5 + 1 * 2.0


def test_a_messages_answer_and_stream_are_billed_from_anthropics_usage():
    d = deployment(input_cost_per_token=1.0, output_cost_per_token=2.0, cache_read_input_token_cost=0.1,
                   cache_creation_input_token_cost=1.25)
    outcome = Outcome(group="m", deployment=d)
    usage = {"input_tokens": 5, "output_tokens": 3, "cache_creation_input_tokens": 8, "cache_read_input_tokens": 16}
    answer = Meter(_Tracker(), "r", None, "messages", {"messages": []}, False)
    answer.bill_answer(outcome, {"type": "message", "content": [{"type": "text", "text": "abc"}], "usage": usage})
    expected = 5 * 1.0 + 16 * 0.1 + 8 * 1.25 + 3 * 2.0
    assert (answer.prompt_tokens, answer.completion_tokens, answer.cost) == (29, 3, pytest.approx(expected))
    events = [{"type": "message_start", "message": {"usage": {**usage, "output_tokens": 1}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abc"}},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
              {"type": "message_stop"}]
    stream = Meter(_Tracker(), "r", None, "messages", {"messages": []}, True)
    assert list(stream.watch(outcome, ChunkStream(None, "messages", iter(events)), True)) == events
    stream.close()
    assert (stream.prompt_tokens, stream.completion_tokens, stream.cost) == (29, 3, pytest.approx(expected))
    assert stream.status == "success" and not stream.estimated


def test_a_hold_prices_every_prompt_token_at_its_dearest_price():
    d = deployment(input_cost_per_token=1.0, output_cost_per_token=2.0, cache_creation_input_token_cost=1.25)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert spend.worst_case_cost([d], "chat", body) == spend.prompt_token_bound(body) * 1.25 + 10 * 2.0


# ---- the ledger on SQLite and PostgreSQL ------------------------------------------------------

def _key(service, **rules):
    made = service.generate(rules)
    return service.lookup(made["key"])


def _row(rules, request_id, cost, **extra):
    now = datetime.now(timezone.utc)
    return {"request_id": request_id, "key_hash": rules.hash if rules else None, "key_alias": None,
            "user_id": None, "team_id": None, "call_type": "chat", "model_group": "m", "deployment_id": "d",
            "provider": "openai", "model": "gpt-4o", "prompt_tokens": 3, "completion_tokens": 4,
            "total_tokens": 7, "cost": cost, "estimated": False, "cache_hit": False, "stream": False,
            "status": "success", "start_time": now, "end_time": now, **extra}


def _key_row(db, rules):
    with db.session() as session:
        return session.execute(select(VirtualKey).where(VirtualKey.key_hash == rules.hash)).scalar_one()


def _ledger_sum(db, rules):
    with db.session() as session:
        return sum(r.cost for r in session.scalars(select(SpendRow).where(SpendRow.key_hash == rules.hash)))


def test_migrations_match_the_models(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "gateway_alembic_version"})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_rows_and_key_spend_are_written_together(db, service, tmp_path):
    rules = _key(service)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    for i in range(5):
        ledger.write(_row(rules, f"r{i}", 0.25), 0.0, rules)
    ledger.write(_row(None, "master-call", 1.0))
    assert _key_row(db, rules).spend == pytest.approx(1.25)
    assert _ledger_sum(db, rules) == pytest.approx(1.25)
    assert not os.path.exists(tmp_path / "spool")


def test_waiting_rows_are_committed_together(db, service, tmp_path):
    """Group commit: rows queued while another writer holds the lock go out in its next batch."""
    rules = _key(service)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    batches = []
    real = ledger._commit
    ledger._commit = lambda d, batch, idempotent: (batches.append(len(batch)), real(d, batch, idempotent))
    ledger._pending.extend([_Entry(_row(rules, f"q{i}", 0.1)) for i in range(3)])
    ledger.write(_row(rules, "last", 0.1), 0.0, rules)
    assert batches == [4]
    assert _key_row(db, rules).spend == pytest.approx(0.4)


def test_database_down_spools_durably_and_replays_exactly_once(db, service, tmp_path, caplog):
    rules = _key(service)
    spool = tmp_path / "spool"
    down = {"now": True}

    def open_db():
        if down["now"]:
            raise errors.ServiceUnavailableError("down")
        return db
    ledger = Ledger(open_db, str(spool))
    for i in range(4):
        ledger.write(_row(rules, f"s{i}", 0.5), 0.0, rules)
    (journal,) = spool.glob(f"spend-{os.getpid()}-*.live.jsonl")  # this process's journal
    lines = journal.read_bytes().splitlines()
    assert [orjson.loads(line)["row"]["request_id"] for line in lines] == ["s0", "s1", "s2", "s3"]
    assert sum("database is unavailable" in r.getMessage() for r in caplog.records) == 1
    assert _key_row(db, rules).spend == 0
    down["now"] = False
    ledger._down_until = 0
    ledger.write(_row(rules, "after", 0.5), 0.0, rules)  # commits, then replays the spool
    assert _key_row(db, rules).spend == pytest.approx(2.5)
    assert _ledger_sum(db, rules) == pytest.approx(2.5)
    assert list(spool.iterdir()) == []


def test_replaying_rows_already_committed_bills_nothing_twice(db, service, tmp_path):
    """A commit that succeeded although the client saw an error is spooled too; replay skips it."""
    rules = _key(service)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    row = _row(rules, "twice", 0.75)
    ledger.write(dict(row), 0.0, rules)
    ledger._spool([_Entry(dict(row)), _Entry(_row(rules, "new", 0.25))])
    ledger._replay(db)
    assert _key_row(db, rules).spend == pytest.approx(1.0)
    assert _ledger_sum(db, rules) == pytest.approx(1.0)


@pytest.mark.parametrize("owner", [2 ** 22 + 12345, os.getppid()], ids=["gone", "pid-reused"])
def test_a_spool_nobody_holds_is_claimed_and_replayed(db, service, tmp_path, owner):
    """Whether its pid is gone or now belongs to another process, an unlocked spool is replayed."""
    rules = _key(service)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"spend-{owner}.jsonl").write_bytes(
        orjson.dumps({"row": _row(rules, "orphan", 0.5), "hold": 0.0, "reset": None}) + b"\n")
    ledger = Ledger(lambda: db, str(spool))
    ledger._replay(db)
    assert _key_row(db, rules).spend == pytest.approx(0.5)
    assert list(spool.iterdir()) == []


def _spool_and_wait(spool, row, ready, finish):
    """A worker whose database is down: spools one row, then lives until told to finish."""
    def down():
        raise RuntimeError("database down")
    Ledger(down, spool).write(row)
    ready.set()
    finish.wait(30)


def test_a_spool_whose_owner_lives_is_left_to_it(db, service, tmp_path):
    import multiprocessing
    rules = _key(service)
    spool = str(tmp_path / "spool")
    context = multiprocessing.get_context("fork")
    ready, finish = context.Event(), context.Event()
    worker = context.Process(target=_spool_and_wait, args=(spool, _row(rules, "owned", 0.5), ready, finish))
    worker.start()
    try:
        assert ready.wait(30)
        ledger = Ledger(lambda: db, spool)
        assert ledger._claimable() == []  # alive: its lock is held
    finally:
        finish.set()
        worker.join(30)
    ledger._replay(db)  # gone: its file is claimed and replayed
    assert _key_row(db, rules).spend == pytest.approx(0.5)
    assert os.listdir(spool) == []


def test_when_the_spool_fails_too_every_waiting_call_hears_it(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")

    def down():
        raise RuntimeError("database down")
    ledger = Ledger(down, str(blocker))
    waiting = _Entry(_row(None, "waiting", 0.1))
    ledger._pending.append(waiting)
    with pytest.raises(OSError):
        ledger.write(_row(None, "mine", 0.1))
    assert waiting.done and isinstance(waiting.error, OSError)


def test_an_empty_batch_writes_nothing(db, tmp_path):
    Ledger(lambda: db, str(tmp_path))._commit(db, [], idempotent=False)
    with db.session() as session:
        assert session.scalars(select(SpendRow)).all() == []


# ---- budget holds -----------------------------------------------------------------------------

def test_holds_admit_only_what_the_budget_covers_and_settle_to_the_real_cost(db, service, tmp_path):
    rules = _key(service, max_budget=1.0)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    assert ledger.hold(rules, "a", 0.4, 60) == (True, None)
    assert ledger.hold(rules, "b", 0.4, 60) == (True, None)
    admitted, balance = ledger.hold(rules, "c", 0.4, 60)
    assert not admitted and balance.left == pytest.approx(0.2)
    ledger.write(_row(rules, "a", 0.1), 0.4, rules)  # settles: 0.1 spent, 0.4 released
    key = _key_row(db, rules)
    assert (key.spend, key.reserved) == (pytest.approx(0.1), pytest.approx(0.4))
    assert ledger.hold(rules, "c", 0.4, 60)[0]
    ledger.write(_row(rules, "b", 0.0, status="error"), 0.4, rules)
    ledger.write(_row(rules, "c", 0.3), 0.4, rules)
    key = _key_row(db, rules)
    assert (key.spend, key.reserved) == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))
    with db.session() as session:
        assert session.scalars(select(BudgetHold)).all() == []


def test_concurrent_holds_never_exceed_the_budget(make_db, service, tmp_path):
    """20 threads, each with its own engine (as separate workers), against a budget that fits 5."""
    rules = _key(service, max_budget=5.0)
    admitted = []
    ledgers = [Ledger(lambda d=make_db(migrate=False): d, str(tmp_path / "spool")) for _ in range(4)]
    barrier = threading.Barrier(20)

    def call(i):
        barrier.wait()
        if ledgers[i % 4].hold(rules, f"h{i}", 1.0, 60)[0]:
            admitted.append(i)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5


def test_an_expired_hold_is_released_by_the_next_call(db, service, tmp_path):
    rules = _key(service, max_budget=1.0)
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    assert ledger.hold(rules, "dead-worker", 1.0, 0.2)[0]
    assert not ledger.hold(rules, "next", 0.5, 60)[0]
    time.sleep(0.3)
    assert ledger.hold(rules, "next", 0.5, 60)[0]
    assert _key_row(db, rules).reserved == pytest.approx(0.5)
    # the dead worker's row arriving late settles its spend but releases nothing twice
    ledger.write(_row(rules, "dead-worker", 0.2), 1.0, rules)
    key = _key_row(db, rules)
    assert (key.spend, key.reserved) == (pytest.approx(0.2), pytest.approx(0.5))


def test_budget_store_down_refuses_budgeted_calls_with_503(tmp_path):
    rules = SimpleNamespace(hash="0" * 64, max_budget=1.0, budget_duration=None)

    def open_db():
        raise RuntimeError("connection refused")
    tracker = SpendTracker(Ledger(open_db, str(tmp_path)), None, 60)
    with pytest.raises(errors.ServiceUnavailableError) as info:
        tracker.reserve(rules, "x", 0.1)
    assert info.value.status == 503


def test_budget_period_resets_spend(db, service, tmp_path):
    rules = _key(service, max_budget=1.0, budget_duration="1h")
    ledger = Ledger(lambda: db, str(tmp_path / "spool"), budget_mode="strict")
    ledger.write(_row(rules, "before", 0.9), 0.0, rules)
    assert not ledger.hold(rules, "x", 0.5, 60)[0]
    with db.session() as session:  # the period ends
        session.execute(update(VirtualKey).where(VirtualKey.key_hash == rules.hash)
                        .values(budget_reset_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert ledger.hold(rules, "x", 0.5, 60)[0]
    key = _key_row(db, rules)
    assert key.spend == 0.0
    reset_at = key.budget_reset_at if key.budget_reset_at.tzinfo else key.budget_reset_at.replace(tzinfo=timezone.utc)
    assert reset_at > datetime.now(timezone.utc) + timedelta(minutes=59)


@pytest.mark.parametrize("value", ["never", "soon", "0x"])
def test_bad_budget_duration_is_refused(service, value):
    with pytest.raises(errors.BadRequestError, match="budget_duration"):
        service.generate({"max_budget": 1, "budget_duration": value})


# ---- through the app --------------------------------------------------------------------------

@pytest.fixture
def app_client(db_url, tmp_path, request):
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.001,
                                                               "output_cost_per_token": 0.002}}],
        "general_settings": {"master_key": MASTER, "database_url": db_url,
                             "spend_spool_dir": str(tmp_path / "spool"), **getattr(request, "param", {})}})
    app = create_app(settings)
    yield app.test_client()
    app.extensions["gateway"].auth.keys.get().db.engine.dispose()


def _call(client, key, **body):
    resp = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "m", "messages": [{"role": "user", "content": "hello there"}], **body})
    data = resp.get_data()
    resp.close()  # runs the response's close hooks, as gunicorn does after the last byte
    return resp, data


def test_cost_header_rows_and_key_info_agree(app_client):
    master = {"Authorization": f"Bearer {MASTER}"}
    key = app_client.post("/key/generate", json={"key_alias": "team-a"}, headers=master).get_json()["key"]
    resp, _ = _call(app_client, key, max_tokens=5)
    assert resp.status_code == 200
    assert float(resp.headers[spend.COST_HEADER]) == pytest.approx(2 * 0.001 + 5 * 0.002)
    _call(app_client, key, max_tokens=3, stream=True)
    _call(app_client, MASTER, max_tokens=2)
    logs = app_client.get("/spend/logs", headers=master, query_string={"api_key": key}).get_json()
    assert [r["stream"] for r in logs] == [True, False]
    assert all(r["status"] == "success" and r["key_alias"] == "team-a" and r["model_group"] == "m" for r in logs)
    info = app_client.get("/key/info", headers={"Authorization": f"Bearer {key}"}).get_json()["info"]
    assert info["spend"] == pytest.approx(sum(r["spend"] for r in logs))
    assert len(app_client.get("/spend/logs", headers=master).get_json()) == 3
    assert app_client.get("/spend/logs", headers=master, query_string={"model": "nope"}).get_json() == []
    one = app_client.get("/spend/logs", headers=master,
                         query_string={"request_id": logs[0]["request_id"]}).get_json()
    assert one == [logs[0]]
    today = datetime.now(timezone.utc).date().isoformat()
    assert len(app_client.get("/spend/logs", headers=master,
                              query_string={"start_date": today, "end_date": today}).get_json()) == 3
    assert app_client.get("/spend/logs", headers=master, query_string={"end_date": "2000-01-01"}).get_json() == []


@pytest.mark.parametrize("query,param", [({"start_date": "yesterday"}, "start_date"), ({"limit": "0"}, "limit"),
                                         ({"limit": "x"}, "limit")])
def test_spend_logs_bad_filters_are_400(app_client, query, param):
    resp = app_client.get("/spend/logs", headers={"Authorization": f"Bearer {MASTER}"}, query_string=query)
    assert resp.status_code == 400 and resp.get_json()["error"]["param"] == param


def test_a_virtual_key_cannot_read_spend_logs(app_client):
    key = app_client.post("/key/generate", json={},
                          headers={"Authorization": f"Bearer {MASTER}"}).get_json()["key"]
    resp = app_client.get("/spend/logs", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 403


@pytest.mark.parametrize("app_client,served", [({"budget_mode": "strict"}, 3), ({}, None)],
                         indirect=["app_client"], ids=["strict", "soft"])
def test_budgeted_key_is_refused_before_the_upstream_once_spent(app_client, served):
    master = {"Authorization": f"Bearer {MASTER}"}
    # worst case of one call: its prompt bound * 0.001 + 5 * 0.002; real: 2 * 0.001 + 5 * 0.002 = 0.012
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    worst = spend.prompt_token_bound(body) * 0.001 + 5 * 0.002
    budget = worst + 0.030
    if served is None:  # soft: while nothing else is in flight, calls go on until spend reaches the budget
        served = math.ceil(budget / 0.012)
    key = app_client.post("/key/generate", json={"max_budget": budget}, headers=master).get_json()["key"]
    codes = [_call(app_client, key, max_tokens=5)[0].status_code for _ in range(served + 1)]
    # strict: 0.036 spent, worst - 0.006 left < worst
    assert codes == [200] * served + [429]
    info = app_client.get("/key/info", headers=master, query_string={"key": key}).get_json()["info"]
    assert info["spend"] == pytest.approx(served * 0.012) and info["reserved"] == pytest.approx(0, abs=1e-12)
    resp, data = _call(app_client, key, max_tokens=5)
    error = orjson.loads(data)["error"]
    assert error["code"] == "insufficient_quota" and error["message"].startswith("Budget has been exceeded!")


def test_per_key_tpm_limit(app_client):
    master = {"Authorization": f"Bearer {MASTER}"}
    key = app_client.post("/key/generate", json={"tpm_limit": 20}, headers=master).get_json()["key"]
    # each call holds 2 prompt + 5 max_tokens = 7, then settles to its real 7 tokens
    codes = [_call(app_client, key, max_tokens=5)[0].status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    resp, data = _call(app_client, key, max_tokens=5)
    assert "tokens per minute" in orjson.loads(data)["error"]["message"]
    assert resp.headers.get("Retry-After")


def test_spend_logs_can_be_turned_off(db_url, tmp_path):
    settings = from_dict({"general_settings": {"master_key": MASTER, "database_url": db_url,
                                               "disable_spend_logs": True}})
    client = create_app(settings).test_client()
    resp = client.get("/spend/logs", headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "spend_logs_disabled"


# ---- the journal (how gunicorn's gevent workers write) ------------------------------------------

def _files(spool):
    return sorted(os.listdir(spool)) if os.path.isdir(spool) else []


def test_journaled_rows_reach_the_database_on_the_next_flush(db, service, tmp_path):
    rules = _key(service)
    spool = str(tmp_path / "spool")
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    for i in range(3):
        ledger.write(_row(rules, f"j{i}", 0.5), 0.0, rules)
    assert _key_row(db, rules).spend == 0  # durable in the journal, not yet committed
    (journal,) = _files(spool)
    assert journal.startswith(f"spend-{os.getpid()}-") and journal.endswith(".live.jsonl")
    ledger.flush()
    assert _key_row(db, rules).spend == pytest.approx(1.5) and _ledger_sum(db, rules) == pytest.approx(1.5)
    assert _files(spool) == []


def test_journal_keeps_rows_through_an_outage_and_commits_each_once(db, service, tmp_path):
    rules = _key(service)
    spool = str(tmp_path / "spool")
    down = {"now": True}

    def open_db():
        if down["now"]:
            raise RuntimeError("database down")
        return db
    ledger = Ledger(open_db, spool, asynchronous=True)
    ledger.write(_row(rules, "a", 0.25), 0.0, rules)
    ledger.flush()  # fails: the rows stay in a set-aside journal of ours
    ledger.write(_row(rules, "b", 0.25), 0.0, rules)
    ledger.flush()  # still down (within the retry pause): set aside in the journal
    ledger.write(_row(rules, "c", 0.25), 0.0, rules)
    assert _key_row(db, rules).spend == 0 and len(_files(spool)) == 2
    down["now"] = False
    ledger._down_until = 0
    ledger.write(_row(rules, "d", 0.25), 0.0, rules)
    ledger.flush()
    assert _key_row(db, rules).spend == pytest.approx(1.0)
    with db.session() as session:
        ids = sorted(r.request_id for r in session.scalars(select(SpendRow)))
    assert ids == ["a", "b", "c", "d"]
    assert _files(spool) == []


def _journal_and_die(spool, row):
    """A worker that journals a row and dies before any flush."""
    Ledger(lambda: None, spool, asynchronous=True).write(row)
    os._exit(0)


def test_a_dead_workers_journal_is_replayed_by_another(db, service, tmp_path):
    import multiprocessing
    rules = _key(service)
    spool = str(tmp_path / "spool")
    worker = multiprocessing.get_context("fork").Process(target=_journal_and_die,
                                                          args=(spool, _row(rules, "orphan", 0.5)))
    worker.start()
    worker.join(30)
    assert len(_files(spool)) == 1
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    assert ledger._has_spool()
    ledger._replay(db)
    assert _key_row(db, rules).spend == pytest.approx(0.5) and _files(spool) == []


def test_a_clean_journal_of_ours_is_left_to_the_flusher(db, service, tmp_path):
    rules = _key(service)
    spool = str(tmp_path / "spool")
    ledger = Ledger(lambda: db, spool, asynchronous=True)
    ledger.write(_row(rules, "queued", 0.5), 0.0, rules)
    assert not ledger._has_spool() and ledger._claimable() == []
    ledger.flush()
    assert _key_row(db, rules).spend == pytest.approx(0.5)


# ---- migrations: alembic only when the schema is behind -------------------------------------------

def test_head_revision_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gateway.storage import HEAD_REVISION
    from gateway.storage import MIGRATIONS
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_database_at_head_opens_without_importing_alembic(db, db_url):
    import subprocess
    import sys
    code = ("import sys; from gateway.storage import Database; d = Database(sys.argv[1]); "
            "print(d.at_head()); d.migrate(); print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    assert out == ["True", "False"]
