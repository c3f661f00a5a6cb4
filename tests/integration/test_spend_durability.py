"""PostgreSQL restarted mid-run: no spend row lost (ledger sum equals key spend).

A real gunicorn gateway (2 gevent workers) keeps its keys and spend ledger in a PRIVATE PostgreSQL
(tests/integration/pg_server.py: its own initdb, port and socket; the machine's shared PostgreSQL is
never touched). Client threads call chat (plain and streamed) with one virtual key without pause
while that server is stopped (`pg_ctl stop -m fast`) and started again. Every 200 must end up as
exactly one ledger row (spooled to `spend_spool_dir` and replayed while the database was down), and
the key's spend must equal the sum of its rows. A gateway started while PostgreSQL is down serves
master-key calls and bills them once the database is there; spool files an earlier run left behind
are replayed even when their pid now belongs to another process.

The server binaries are required when CI=true; elsewhere the tests are skipped without them.
"""

import collections
import json
import os
import subprocess
import threading
import time
import uuid
from datetime import datetime
from datetime import timezone
from pathlib import Path

import orjson
import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy import text

from gateway.spend import ledger as spend_module
from gateway.access.keys import CACHE_SECONDS
from tests.integration.conftest import ledger_row
from tests.integration.pg_server import PostgresServer

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
MASTER = "sk-1234"
MODEL = "gpt-3.5-turbo"
PRICE_IN, PRICE_OUT = 0.001, 0.002  # USD per token, explicit: the ledger must not depend on list prices
CLIENTS = 4
BEFORE_SECONDS = 2.0  # calls while PostgreSQL is up
# Calls while it is down: past the key cache's lifetime (the key must be served as last seen, not
# refused) and several of the ledger's retry intervals.
DOWN_SECONDS = CACHE_SECONDS + 2 * spend_module.RETRY_SECONDS
AFTER_SECONDS = 3.0  # calls after it is back
SETTLE_SECONDS = 45.0  # replay deadline after the load stops


@pytest.fixture
def private_pg():
    """A PostgreSQL server of this test's own, to stop and start; removed afterwards."""
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"CI needs the PostgreSQL server binaries: {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


def gateway_config(fake, database_url, spool):
    return {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": fake.url + "/v1", "api_key": fake.api_key,
            "input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url,
                             "spend_spool_dir": str(spool)},
    }


def spool_files(spool):
    """The ledger's spool files (spend-<pid>[-<tag>].jsonl) present now."""
    try:
        return sorted(name for name in os.listdir(spool) if name.startswith("spend-"))
    except FileNotFoundError:
        return []


def cost_of(usage):
    return usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT


# ---- the client load ---------------------------------------------------------------------------

Result = collections.namedtuple("Result", "status request_id stream cost phases error began ended")


class Load:
    """CLIENTS threads calling chat on fresh connections (so calls spread over both workers) until
    stopped; each call records its status, x-request-id, the cost it can be billed (from the usage
    the client saw, None when it did not ask for it), the phases it started and ended in, and when
    (time.monotonic()) it began and ended."""

    def __init__(self, url, key):
        self.url = url
        self.key = key
        self.phase = "up"
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread hung"

    def count(self, status=200, phase=None):
        with self._lock:
            return sum(1 for r in self.results if r.status == status
                       and (phase is None or r.phases == (phase, phase)))

    def _run(self, n):
        i = 0
        while not self._stop.is_set():
            i += 1
            result = self.call(n, i)
            with self._lock:
                self.results.append(result)
            if result.status != 200:
                time.sleep(0.05)  # no hot loop on refusals

    def call(self, n, i):
        stream = i % 2 == 0
        usage_wanted = not stream or i % 4 == 0  # half the streams ask for the usage chunk
        content = f"client {n} call {i} " + "word " * (i % 9)  # varied token counts
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        if stream:
            body["stream"] = True
            if usage_wanted:
                body["stream_options"] = {"include_usage": True}
        started, began = self.phase, time.monotonic()
        try:
            resp = requests.post(self.url + "/chat/completions", json=body, stream=stream, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})
            request_id = resp.headers.get("x-request-id")
            cost, error = None, None
            if resp.status_code != 200:
                error = resp.text[:300]
            elif stream:
                data = resp.text
                if not data.rstrip().endswith("data: [DONE]"):
                    error = f"stream did not finish: {data[-300:]!r}"
                if usage_wanted:
                    chunks = [json.loads(line[6:]) for line in data.splitlines()
                              if line.startswith("data: {")]
                    usage = [c["usage"] for c in chunks if c.get("usage")]
                    cost = cost_of(usage[-1]) if usage else None
                    if not usage:
                        error = "no usage chunk in a stream that asked for it"
            else:
                cost = cost_of(resp.json()["usage"])
            status = resp.status_code
            resp.close()
        except requests.RequestException as exc:
            status, request_id, cost, error = None, None, None, f"{type(exc).__name__}: {exc}"
        return Result(status, request_id, stream, cost, (started, self.phase), error, began, time.monotonic())


# ---- helpers on the database -------------------------------------------------------------------

def ledger_rows(engine, key_hash):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT request_id, cost, status, stream, estimated, start_time, end_time "
                 "FROM gateway_spend WHERE key_hash = :h"),
            {"h": key_hash}).all()


def key_spend(engine, key_hash):
    with engine.connect() as connection:
        return connection.execute(text("SELECT spend FROM gateway_keys WHERE key_hash = :h"),
                                  {"h": key_hash}).scalar_one()


def tail(gw, lines=60):
    return "\n".join(gw.log().splitlines()[-lines:])


# ---- the tests ---------------------------------------------------------------------------------

def test_postgres_restarted_mid_run_no_spend_row_lost(private_pg, start_gateway, fake_openai, tmp_path):
    spool = tmp_path / "spool"
    gw = start_gateway(gateway_config(fake_openai, private_pg.url, spool), args=["--num_workers", "2"])
    master = {"Authorization": f"Bearer {MASTER}"}
    resp = requests.post(gw.url + "/key/generate", headers=master, json={"duration": "1h"}, timeout=30)
    assert resp.status_code == 200, resp.text
    key, key_hash = resp.json()["key"], resp.json()["token"]

    timings = {}
    load = Load(gw.url, key).start()
    try:
        time.sleep(BEFORE_SECONDS)
        assert load.count(200) > 0, f"no call succeeded before the outage: {load.results[:5]}\n{tail(gw)}"

        begun = time.monotonic()
        load.phase = "stopping"
        private_pg.stop(mode="fast")
        down_from = time.monotonic()
        timings["stop"] = round(down_from - begun, 3)
        load.phase = "down"
        seen_spool = set()
        deadline = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < deadline:
            seen_spool.update(spool_files(spool))
            time.sleep(0.1)
        load.phase = "starting"
        down_until, down_until_wall = time.monotonic(), datetime.now(timezone.utc)
        private_pg.start()
        timings["start"] = round(time.monotonic() - down_until, 3)
        load.phase = "back"
        time.sleep(AFTER_SECONDS)
    finally:
        load.stop()

    results = load.results
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 503]
    others = [r for r in results if r.status not in (200, 503)]
    down_ok = load.count(200, phase="down")
    # Calls made once the key's cache entry had certainly expired, still during the outage.
    late_ok = sum(1 for r in ok if r.began >= down_from + CACHE_SECONDS + 0.5 and r.ended <= down_until)
    summary = (f"{len(results)} calls: {len(ok)} x 200 ({down_ok} entirely while PostgreSQL was down, "
               f"{late_ok} of them after the key cache's {CACHE_SECONDS:g} s), {len(refused)} x 503, "
               f"{len(others)} other; PostgreSQL down {down_until - down_from:.2f} s; timings {timings}")
    print(summary)

    # Every call answered 200, or 503 "key store unavailable" (only possible for a worker that had
    # never cached the key; with the key cached, the outage must not refuse it).
    assert not others, f"{summary}\n{others[:5]}\n{tail(gw)}"
    for r in refused:
        assert "key_store_unavailable" in (r.error or ""), r
    bad = [r for r in ok if r.error or not r.request_id]
    assert not bad, f"200 answers that were broken: {bad[:5]}\n{tail(gw)}"
    ids = [r.request_id for r in ok]
    assert len(set(ids)) == len(ids), "x-request-id repeated across calls"

    # The outage was real and calls went through it: they were spooled, not committed, and the key
    # was served as last seen even after its cache entry expired.
    assert down_ok >= CLIENTS, f"too few calls while PostgreSQL was down: {summary}\n{tail(gw)}"
    assert late_ok >= CLIENTS, f"the cached key stopped being served during the outage: {summary}\n{tail(gw)}"
    assert seen_spool, f"no spool file appeared while PostgreSQL was down: {summary}\n{tail(gw)}"
    assert "spend: the database is unavailable" in gw.log()

    # Replay: the spool empties and every 200 has its row.
    engine = create_engine(private_pg.url)
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            rows = ledger_rows(engine, key_hash)
            leftover = spool_files(spool)
            if (not leftover and len(rows) >= len(ok)) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        timings["replayed"] = round(time.monotonic() - deadline + SETTLE_SECONDS, 2)
        print(f"settled {timings['replayed']} s after the load stopped")
        assert not leftover, f"spool not replayed within {SETTLE_SECONDS}s: {leftover}\n{tail(gw)}"
        assert "spend: replayed" in gw.log()

        counts = collections.Counter(row.request_id for row in rows)
        missing = [i for i in ids if counts[i] == 0]
        doubled = [i for i, n in counts.items() if n > 1]
        extra = set(counts) - set(ids)
        assert not missing, (f"{len(missing)} of {len(ids)} successful calls have no spend row, e.g. "
                             f"{[r for r in ok if r.request_id in set(missing[:5])]}\n{tail(gw)}")
        assert not doubled, f"request ids billed more than once: {doubled[:10]}"
        assert not extra, f"rows for calls the client never saw succeed: {sorted(extra)[:10]}"
        assert len(rows) == len(ok)

        by_id = {row.request_id: row for row in rows}
        for r in ok:
            row = by_id[r.request_id]
            assert row.status == "success", (r, row)
            assert row.stream == r.stream, (r, row)
            assert row.estimated is False, (r, row)  # usage came from the upstream, streams too
            assert row.start_time <= row.end_time, (r, row)
            if r.phases == ("down", "down") and r.ended < down_until - 0.5:
                # spooled: the row keeps the call's times, not the replay's
                assert row.end_time <= down_until_wall, (r, row)
            if r.cost is not None:
                assert row.cost == pytest.approx(r.cost, rel=1e-9, abs=1e-12), (r, row)
        total = sum(row.cost for row in rows)
        assert total > 0
        assert key_spend(engine, key_hash) == pytest.approx(total, rel=1e-9, abs=1e-12)

        # The gateway's own view of the ledger agrees.
        logs = requests.get(gw.url + "/spend/logs", headers=master, timeout=30,
                            params={"api_key": key_hash, "limit": 10_000})
        assert logs.status_code == 200, logs.text
        assert sorted(row["request_id"] for row in logs.json()) == sorted(ids)
        info = requests.get(gw.url + "/key/info", headers=master, params={"key": key_hash}, timeout=30)
        assert info.status_code == 200, info.text
        assert info.json()["info"]["spend"] == pytest.approx(total, rel=1e-9, abs=1e-12)
    finally:
        engine.dispose()


def test_gateway_started_while_postgres_down_bills_master_calls_once_it_is_back(
        private_pg, start_gateway, fake_openai, tmp_path):
    spool = tmp_path / "spool"
    private_pg.stop(mode="fast")  # initialized, never migrated: the gateway has no key store yet
    gw = start_gateway(gateway_config(fake_openai, private_pg.url, spool), args=["--num_workers", "2"])
    master = {"Authorization": f"Bearer {MASTER}"}

    # The key store cannot open, so managing keys is refused...
    resp = requests.post(gw.url + "/key/generate", headers=master, json={}, timeout=30)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "key_store_unavailable"

    # ...but calls with the master key are served, and billed to the spool.
    calls = {}
    for i in range(6):  # fresh connections: both workers get some
        stream = i % 2 == 1
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"while down {i}"}]}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        resp = requests.post(gw.url + "/chat/completions", headers=master, json=body, timeout=30)
        assert resp.status_code == 200, f"{resp.text}\n{tail(gw)}"
        if stream:
            assert resp.text.rstrip().endswith("data: [DONE]")
            usage = [json.loads(line[6:])["usage"] for line in resp.text.splitlines()
                     if line.startswith("data: {") and json.loads(line[6:]).get("usage")]
            calls[resp.headers["x-request-id"]] = cost_of(usage[-1])
        else:
            calls[resp.headers["x-request-id"]] = cost_of(resp.json()["usage"])

    deadline = time.monotonic() + 10
    while not spool_files(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_files(spool), f"nothing was spooled while PostgreSQL was down\n{tail(gw)}"
    assert "spend: the database is unavailable" in gw.log()
    spooled = spooled_rows(spool)
    deadline = time.monotonic() + 10
    while spooled < len(calls) and time.monotonic() < deadline:  # rows land after the last byte
        time.sleep(0.05)
        spooled = spooled_rows(spool)
    assert spooled == len(calls)

    begun = time.monotonic()
    private_pg.start()
    engine = create_engine(private_pg.url)
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        rows = []
        while time.monotonic() < deadline:
            try:
                with engine.connect() as connection:
                    rows = connection.execute(text(
                        "SELECT request_id, key_hash, cost, status FROM gateway_spend")).all()
            except Exception:  # noqa: BLE001  (the gateway has not created its tables yet)
                rows = []
            if len(rows) >= len(calls) and not spool_files(spool):
                break
            time.sleep(0.25)
        print(f"rows replayed {time.monotonic() - begun:.2f} s after PostgreSQL came back")
        assert sorted(row.request_id for row in rows) == sorted(calls), f"{rows}\n{tail(gw)}"
        assert not spool_files(spool)
        for row in rows:
            assert row.key_hash is None  # the master key
            assert row.status == "success"
            assert row.cost == pytest.approx(calls[row.request_id], rel=1e-9, abs=1e-12)

        # The gateway serves them too, and its key store works now.
        for request_id in calls:
            resp = requests.get(gw.url + "/spend/logs", headers=master, params={"request_id": request_id},
                                timeout=30)
            assert resp.status_code == 200, resp.text
            assert [row["request_id"] for row in resp.json()] == [request_id]
        resp = requests.post(gw.url + "/key/generate", headers=master, json={}, timeout=30)
        assert resp.status_code == 200, resp.text
    finally:
        engine.dispose()


def spooled_rows(spool):
    """Rows in the journals (beside them: the start entries of calls, see Ledger.begin)."""
    return sum(b'{"row":' in line for name in spool_files(spool)
               for line in Path(spool, name).read_bytes().splitlines())


def spooled_row(request_id, cost):
    """One spool line as the ledger writes it (gateway.spend.ledger.Ledger._append): a master-key chat row."""
    now = datetime.now(timezone.utc)
    row = {"request_id": request_id, "key_hash": None, "key_alias": None, "user_id": None, "team_id": None,
           "call_type": "chat", "model_group": MODEL, "deployment_id": None, "provider": "openai",
           "model": MODEL, "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": cost,
           "estimated": False, "cache_hit": False, "stream": False, "status": "success",
           "start_time": now.isoformat(), "end_time": now.isoformat()}
    return json.dumps({"row": row, "hold": 0.0, "reset": None}) + "\n"


def test_spool_left_by_an_earlier_run_is_replayed_even_when_its_pid_is_in_use_again(
        private_pg, start_gateway, fake_openai, tmp_path):
    """Spool files are named after the worker's pid, and a file whose pid is alive is left to "its
    owner". After a restart (a container's pids start over) that pid can belong to another process
    (here: this test runner, which never replays anything), and the file must still be replayed."""
    spool = tmp_path / "spool"
    spool.mkdir()
    gone_pid = _exited_pid()
    reused_pid = os.getpid()  # alive, and not a gateway worker
    rows = {f"req_{uuid.uuid4().hex}": 0.25, f"req_{uuid.uuid4().hex}": 0.5}
    (gone_id, gone_cost), (reused_id, reused_cost) = rows.items()
    (spool / f"spend-{gone_pid}.jsonl").write_text(spooled_row(gone_id, gone_cost))
    (spool / f"spend-{reused_pid}.jsonl").write_text(spooled_row(reused_id, reused_cost))

    gw = start_gateway(gateway_config(fake_openai, private_pg.url, spool), args=["--num_workers", "2"])
    master = {"Authorization": f"Bearer {MASTER}"}
    for i in range(4):  # a committed row in each worker makes it replay what it may claim
        resp = requests.post(gw.url + "/chat/completions", headers=master, timeout=30,
                             json={"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]})
        assert resp.status_code == 200, resp.text

    engine = create_engine(private_pg.url)
    try:
        deadline = time.monotonic() + 3 * spend_module.RETRY_SECONDS + 5
        found = {}
        while time.monotonic() < deadline:
            try:
                with engine.connect() as connection:
                    found = dict(connection.execute(
                        text("SELECT request_id, cost FROM gateway_spend WHERE request_id IN (:a, :b)"),
                        {"a": gone_id, "b": reused_id}).all())
            except Exception:  # noqa: BLE001  (the first worker may still be creating the tables)
                found = {}
            if len(found) == 2 and not spool_files(spool):
                break
            time.sleep(0.25)
        assert found.get(gone_id) == pytest.approx(gone_cost), f"{found}\n{tail(gw)}"
        assert found.get(reused_id) == pytest.approx(reused_cost), (
            f"the spool file of an earlier run named after pid {reused_pid}, now a live process that "
            f"is no gateway worker, was never replayed: left {spool_files(spool)}\n{tail(gw)}")
        assert not spool_files(spool)
    finally:
        engine.dispose()


def _exited_pid():
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_journal_left_by_a_dead_process_is_replayed_at_start_up_with_no_call(start_gateway, tmp_path):
    """A restarted, idle instance bills what its predecessor journaled: the rows are committed by
    the new workers' background replay, before (and without) any call."""
    spool = tmp_path / "spool"
    spool.mkdir()
    now = datetime.now(timezone.utc)
    rows = [{"request_id": f"req-left-{i}", "key_hash": None, "key_alias": None, "user_id": None, "team_id": None,
             "call_type": "chat", "model_group": "demo", "deployment_id": "d", "provider": "demo", "model": "echo",
             "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": 0.25, "estimated": False,
             "cache_hit": False, "stream": False, "status": "success", "start_time": now.isoformat(),
             "end_time": now.isoformat()} for i in range(3)]
    dead_pid = 2 ** 22 + 4242  # no such process: nobody holds the file's lock
    (spool / f"spend-{dead_pid}.jsonl").write_bytes(
        b"".join(orjson.dumps({"row": row, "hold": 0.0, "reset": None}) + b"\n" for row in rows))
    master = "sk-master-replay-0123456789"
    gw = start_gateway({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                        "general_settings": {"master_key": master, "spend_spool_dir": str(spool),
                                             "database_url": f"sqlite:///{tmp_path / 'replay.sqlite'}"}},
                       args=["--num_workers", "2"])
    for row in rows:  # /spend/logs reads the database; it writes no row and wakes no ledger
        assert ledger_row(gw, master, row["request_id"], timeout=20)["spend"] == 0.25
    assert spool_files(spool) == []
