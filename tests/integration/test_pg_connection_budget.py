"""The PostgreSQL connection budget (general_settings.database_connection_pool_limit and
database_connection_timeout, issue #17 item 6): real gunicorn + gevent gateways, the openai SDK as
client, real PostgreSQL.

1. A private server with too few connections for the gateways' budget (instances x workers x pool
   limit > max_connections): every answer is a 200 or a prompt, clean 503 (OpenAI error, Retry-After),
   none hangs, none is a 500; calls with the master key keep working; once the burst is over every
   call succeeds again, and the ledger holds exactly one row per successful call.
2. One connection per worker on the shared server and 20 concurrent calls: they queue for it and
   all succeed, and the gateway never holds more than workers x 1 connections.
"""

import collections
import threading
import time
import uuid

import openai
import pytest
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from tests.integration.conftest import admin_call
from tests.integration.pg_server import PostgresServer
from tests.pg import IN_CI
from tests.pg import schema

pytestmark = pytest.mark.integration

MASTER = "sk-budget-master-0123456789"
MODEL = "gpt-3.5-turbo"
ROLE = "gateway"  # the gateways' own role, no superuser: the server keeps reserved slots from it
MAX_CONNECTIONS, RESERVED = 12, 3  # 9 connections for the gateways, 3 for the test's superuser
INSTANCES, WORKERS, POOL_LIMIT = 2, 2, 4  # 16 wanted > 9 allowed
POOL_TIMEOUT = 1.0  # database_connection_timeout
CLIENTS = 12  # concurrent callers per instance during the burst
BURST_SECONDS = 8.0
CLIENT_TIMEOUT = 30.0  # the SDK's own bound: a hang shows as APITimeoutError, never as a stuck test
# A call may wait for a pooled connection twice (its key, its budget hold), each wait at most
# POOL_TIMEOUT. The rest of a call is what the same call with the master key (no database on its path)
# takes meanwhile: the clients, four gateway workers and PostgreSQL share two busy cores here.
MARGIN = 2.0
RECOVERY_AT_ONCE = 2  # calls at once after the burst: fewer connections than the server takes
RECOVERY_DEADLINE = 30.0
LEDGER_DEADLINE = 60.0

Call = collections.namedtuple("Call", "status request_id code retry_after elapsed error master")


def _config(fake, url, spool, pool_limit, pool_timeout):
    return {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": fake.url + "/v1", "api_key": fake.api_key,
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}],
        "general_settings": {"master_key": MASTER, "database_url": url, "spend_spool_dir": str(spool),
                             "database_connection_pool_limit": pool_limit,
                             "database_connection_timeout": pool_timeout},
    }


def _budgeted_keys(gw, count):
    """Keys made after start, each with a budget: every call of theirs takes a budget hold (a
    transaction) and its first call in a worker looks the key up."""
    return [admin_call(gw, MASTER, "POST", "/key/generate", json={"max_budget": 1000.0})["key"]
            for _ in range(count)]


def _client(url, key):
    """An openai SDK client whose every call is on a fresh connection (so calls spread over the
    workers), without retries, bounded by CLIENT_TIMEOUT."""
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT,
                         default_headers={"Connection": "close"})


def _call(client, n):
    """One chat call: its status, request id, error code, Retry-After and how long it took."""
    master = client.api_key == MASTER
    began = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"call {n}"}])
        raw.parse()
        return Call(200, raw.headers.get("x-request-id"), None, None, time.monotonic() - began, None, master)
    except openai.APIStatusError as exc:
        json_body = exc.response.headers.get("content-type", "").startswith("application/json")
        error = (exc.response.json() if json_body else {}).get("error") or {}
        return Call(exc.status_code, exc.response.headers.get("x-request-id"), error.get("code"),
                    exc.response.headers.get("retry-after"), time.monotonic() - began,
                    None if error.get("type") == "service_unavailable" else exc.response.text[:300], master)
    except openai.APIError as exc:  # a timeout or a dropped connection: what must never happen
        return Call(None, None, None, None, time.monotonic() - began, f"{type(exc).__name__}: {exc}", master)


def _burst(targets, seconds):
    """Each (url, key) of `targets` called by its own thread in a loop for `seconds`: the calls."""
    calls, lock, stop = [], threading.Lock(), threading.Event()

    def run(url, key, n):
        i, client = 0, _client(url, key)
        while not stop.is_set():
            i += 1
            found = _call(client, n * 100_000 + i)
            with lock:
                calls.append(found)
        client.close()

    threads = [threading.Thread(target=run, args=(url, key, n), daemon=True) for n, (url, key) in enumerate(targets)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # the load's own length, not a wait for a condition
    stop.set()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT + 10)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    return calls


def _round(targets, at_once):
    """One call per (url, key), `at_once` of them at a time: the calls."""
    calls, pending = [], list(enumerate(targets))
    lock = threading.Lock()

    def run():
        while True:
            with lock:
                if not pending:
                    return
                i, (url, key) = pending.pop()
            with _client(url, key) as client:
                found = _call(client, i)
            with lock:
                calls.append(found)

    threads = [threading.Thread(target=run) for _ in range(at_once)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(len(targets) * CLIENT_TIMEOUT)
    return calls


class Sampler:
    """The most connections `where` matches in pg_stat_activity, sampled every 20 ms until stopped."""

    def __init__(self, engine, where, params):
        self.engine, self.query, self.params = engine, text(
            f"SELECT count(*) FROM pg_stat_activity WHERE {where}"), params  # `where` is the test's own text
        self.peak, self.error, self._stop = 0, None, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        assert self.error is None, f"sampling pg_stat_activity failed: {self.error}"

    def _run(self):
        try:
            with self.engine.connect() as connection:
                while not self._stop.is_set():
                    self.peak = max(self.peak, connection.execute(self.query, self.params).scalar())
                    connection.rollback()  # a new snapshot of pg_stat_activity each time
                    self._stop.wait(0.01)
        except Exception as exc:  # noqa: BLE001  (told by __exit__)
            self.error = f"{type(exc).__name__}: {exc}"


def _success_rows(engine):
    with engine.connect() as connection:
        return connection.execute(text("SELECT request_id FROM gateway_spend WHERE status = 'success'")).scalars().all()


def _await_ledger(engine, ids):
    """Poll until the ledger's successful rows are exactly `ids` (each once), or fail at the deadline."""
    deadline = time.monotonic() + LEDGER_DEADLINE
    while True:
        rows = _success_rows(engine)
        if sorted(rows) == sorted(ids):
            return
        assert time.monotonic() < deadline, (
            f"ledger: {len(rows)} success rows ({len(rows) - len(set(rows))} repeated) for {len(ids)} "
            f"successful calls; missing {sorted(set(ids) - set(rows))[:5]}, extra {sorted(set(rows) - set(ids))[:5]}")
        time.sleep(0.2)


def _check_answers(calls):
    """Every answer a 200 or a clean 503; none hung, none a 500."""
    bad = [c for c in calls if c.status not in (200, 503) or c.error]
    assert not bad, bad[:5]
    for c in calls:
        if c.status == 503:
            assert c.code in ("key_store_unavailable", "budget_store_unavailable"), c
            assert c.retry_after is not None and int(c.retry_after) >= 1, c


@pytest.fixture
def small_pg():
    """A private server with MAX_CONNECTIONS, RESERVED of them for superusers, and the gateways'
    role owning a database of its own."""
    try:
        server = PostgresServer(settings={"max_connections": MAX_CONNECTIONS,
                                          "superuser_reserved_connections": RESERVED})
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"CI needs the PostgreSQL server binaries: {exc}")
        pytest.skip(str(exc))
    with server:
        admin = create_engine(server.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE {ROLE} LOGIN"))  # constant names, no input
            connection.execute(text(f"CREATE DATABASE gw OWNER {ROLE}"))
        gw_admin = create_engine(server.url.rsplit("/", 1)[0] + "/gw", poolclass=NullPool)
        yield server, gw_admin, f"postgresql+psycopg2://{ROLE}@127.0.0.1:{server.port}/gw"
        gw_admin.dispose()
        admin.dispose()


def test_more_connections_than_the_server_takes_are_prompt_503s_then_it_recovers(
        small_pg, start_gateway, fake_openai, tmp_path):
    server, db, url = small_pg
    gateways = [start_gateway(_config(fake_openai, url, tmp_path / f"spool-{i}", POOL_LIMIT, POOL_TIMEOUT),
                              args=["--num_workers", str(WORKERS)]) for i in range(INSTANCES)]
    keys = _budgeted_keys(gateways[0], 8)
    targets = [(gateways[n % INSTANCES].url, keys[n % len(keys)]) for n in range(CLIENTS * INSTANCES)]
    targets += [(gw.url, MASTER) for gw in gateways for _ in range(2)]  # no database on their path
    with Sampler(db, "usename = :role", {"role": ROLE}) as sampler:
        calls = _burst(targets, BURST_SECONDS)
    burst_over = time.monotonic()
    _check_answers(calls)
    statuses = collections.Counter(c.status for c in calls)
    codes = collections.Counter(c.code for c in calls if c.status == 503)
    refusals = server.log().count("remaining connection slots are reserved")
    slowest = max(c.elapsed for c in calls)
    host = max(c.elapsed for c in calls if c.master)  # how slow this host makes a call without the database
    print(f"\nburst: max_connections={MAX_CONNECTIONS} ({MAX_CONNECTIONS - RESERVED} for {ROLE}), budget "
          f"{INSTANCES}x{WORKERS}x{POOL_LIMIT}={INSTANCES * WORKERS * POOL_LIMIT}, {len(calls)} calls: "
          f"{dict(statuses)} {dict(codes)}, refused connections {refusals}, peak connections "
          f"{sampler.peak}, slowest 200 {max(c.elapsed for c in calls if c.status == 200):.2f}s, slowest 503 "
          f"{max((c.elapsed for c in calls if c.status == 503), default=0):.2f}s, slowest master-key call {host:.2f}s")
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # the budget really was short, and it served
    assert slowest < 2 * POOL_TIMEOUT + host + MARGIN, sorted(calls, key=lambda c: c.elapsed)[-8:]
    assert all(c.status == 200 for c in calls if c.master), [c for c in calls if c.master and c.status != 200][:3]
    assert sampler.peak <= MAX_CONNECTIONS - RESERVED

    # The burst is over: at a load within the budget every key is served again on every instance.
    recovery_targets = [(gw.url, key) for gw in gateways for key in keys] * 2
    after = []
    while True:
        found = _round(recovery_targets, RECOVERY_AT_ONCE)
        after += found
        if all(c.status == 200 for c in found):
            break
        _check_answers(found)
        assert time.monotonic() - burst_over < RECOVERY_DEADLINE, [c for c in found if c.status != 200]
    recovered = time.monotonic() - burst_over
    again = _round(recovery_targets, RECOVERY_AT_ONCE)
    assert all(c.status == 200 for c in again), [c for c in again if c.status != 200]
    print(f"recovered {recovered:.2f}s after the burst")

    ok = [c.request_id for c in calls + after + again if c.status == 200]
    _await_ledger(db, ok)
    for i in range(INSTANCES):
        assert not list((tmp_path / f"spool-{i}").glob("*quarantine*")), "a row was set aside as bad data"


def test_one_connection_per_worker_queues_concurrent_calls_and_serves_them_all(
        start_gateway, fake_openai, tmp_path):
    name = f"gwpool_{uuid.uuid4().hex[:12]}"  # marks this gateway's connections in pg_stat_activity
    with schema() as (url, admin, _schema):
        # Sampled from before start: the migrations and their advisory lock are counted too.
        with Sampler(admin, "application_name = :name", {"name": name}) as sampler:
            gw = start_gateway(_config(fake_openai, f"{url}&application_name={name}", tmp_path / "spool", 1, 5.0),
                               args=["--num_workers", str(WORKERS)])
            keys = _budgeted_keys(gw, 4)
            targets = [(gw.url, keys[n % len(keys)]) for n in range(20)]
            calls = [c for _ in range(3) for c in _round(targets, len(targets))]
        slowest = max(c.elapsed for c in calls)
        print(f"\npool limit 1 x {WORKERS} workers, 20 at once: {collections.Counter(c.status for c in calls)}, "
              f"peak connections {sampler.peak}, slowest {slowest:.2f}s")
        assert all(c.status == 200 for c in calls), [c for c in calls if c.status != 200][:5]
        assert slowest < 5.0  # the default database_connection_timeout: never reached here
        assert 1 <= sampler.peak <= WORKERS
        engine = create_engine(url, poolclass=NullPool)
        try:
            _await_ledger(engine, [c.request_id for c in calls])
        finally:
            engine.dispose()
