"""Hard budgets and per-key limits under real concurrency (issue #5).

Real gunicorn gateways (2 gevent workers each) on SQLite, and two instances on the real PostgreSQL
sharing the real Redis, called concurrently through the openai SDK (AsyncOpenAI):

* the budget race: 50 overlapping calls with a key whose budget covers exactly 10 worst cases
  (`budget_mode: strict`; the soft default is raced in test_ledger_hardening.py);
* a worker SIGKILLed mid-call: its hold expires after budget_hold_seconds and is swept;
* budget_duration: a spent budget starts over once its period ends;
* tpm_limit and max_parallel_requests are exact across two instances.

The fake upstream counts whitespace words as tokens and cuts its answer at max_tokens, so the real
cost of every call is known in advance. The prompt is made of one-character words and priced low, which keeps
the gateway's prompt bound (and so the worst case it holds) close to the real cost: once the admitted
calls settle, what is left of the budget cannot cover one more call, so "at most 10" holds however
late a call arrives (`test_the_numbers_make_every_assertion_meaningful`).

PostgreSQL runs in a fresh schema (tests.pg) and Redis is the shared one at 127.0.0.1:6379; both
are required when CI=true, elsewhere their tests are skipped. Keys in Redis are per virtual key
(a fresh key per test) and are deleted afterwards.
"""

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
from pathlib import Path

import openai
import pytest
import requests
import yaml

from gateway.access import keys as key_module
from gateway.data import estimate_tokens
from gateway.spend.meter import prompt_token_bound
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.test_limits import shared_redis  # noqa: F401  (the shared Redis fixture)
from tests.pg import schema_url as pg_schema_url

pytestmark = pytest.mark.integration

MASTER = "sk-budget-master-0123456789"
# USD per token, set on the deployments. The prompt is cheap next to the answer: the gateway bounds a
# prompt by its bytes (a token is at least a byte), twice what the fake bills for "a a a ...", so the
# answer, whose cost is exactly known, must be most of a call's worst case.
IN_PRICE, OUT_PRICE = 0.00001, 0.002
WORDS = 80  # "a a a ...": the fake bills WORDS prompt tokens, the gateway bounds them by their bytes + framing
MAX_TOKENS = 80  # <= the fake's answer length (4 + WORDS words), so every answer is cut at MAX_TOKENS
MESSAGES = [{"role": "user", "content": " ".join(["a"] * WORDS)}]
SLOW_SECONDS = 1.0  # the fake's `slow` trigger: long enough for every concurrent call to be decided
RACE_CALLS, RACE_FITS = 50, 10
HOLD_SECONDS = 4  # budget_hold_seconds for the killed-worker test
BUDGET_PERIOD = "3s"
EPSILON = 1e-9


def chat_body(model):
    """The exact request body every call here sends (the SDK adds nothing the gateway counts)."""
    return {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}


def worst_case(in_price=IN_PRICE):
    """What the gateway holds for one call: prompt bound x input price + max_tokens x output price."""
    return prompt_token_bound(chat_body("any")) * in_price + MAX_TOKENS * OUT_PRICE


def real_cost(in_price=IN_PRICE):
    """What one call really costs: the fake's usage (words) at the deployment's prices."""
    return WORDS * in_price + MAX_TOKENS * OUT_PRICE


def tpm_hold():
    """What a key's token window holds for one call: chars/4 of the messages + max_tokens."""
    return estimate_tokens(chat_body("any")) + MAX_TOKENS


# ---- gateways ------------------------------------------------------------------------------------

def gateway_config(fake, general=None, router_settings=None):
    upstream = {"api_base": fake.url + "/v1", "api_key": fake.api_key}
    priced = {**upstream, "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}
    models = [("priced-slow", "openai/slow", priced),  # the fake answers after slow_seconds
              ("priced-stall", "openai/stall-stream", priced),  # streams two chunks, then stalls
              ("priced-hang", "openai/hang", priced),  # ... only once the caller goes away
              ("priced", "openai/budget-fast", priced),
              # billed for its output only: the real cost of a call is exactly its worst case
              ("output-priced", "openai/budget-fast", {**priced, "input_cost_per_token": 0.0})]
    return {"model_list": [{"model_name": name, "litellm_params": {"model": model, **params}}
                           for name, model, params in models],
            "general_settings": {"master_key": MASTER, **(general or {})},
            "router_settings": dict(router_settings or {})}


@dataclass
class Answer:
    """One call as its client saw it."""

    status: int
    code: str | None
    type: str | None
    started: float
    ended: float
    message: str | None = None


class Cluster:
    """One or more gateway instances on one key store."""

    def __init__(self, procs):
        self.procs = procs
        self.urls = [proc.url for proc in procs]

    def admin(self, method, path, **kwargs):
        resp = requests.request(method, self.urls[0] + path, headers={"Authorization": f"Bearer {MASTER}"},
                                timeout=30, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def warm_up(self):
        """Open the key store in every worker (first use migrates), so the load measures budgets."""
        def touch(url):
            resp = requests.get(url + "/key/list", headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)
            assert resp.status_code == 200, resp.text
        fire_plain([lambda url=url: touch(url) for url in self.urls for _ in range(8)])

    def generate(self, **rules):
        """A new key with these rules: (key, its hash)."""
        made = self.admin("POST", "/key/generate", json=rules)
        return made["key"], made["token"]

    def info(self, key):
        return self.admin("GET", "/key/info", params={"key": key})["info"]

    def settled(self, key, timeout=15):
        """/key/info once every hold of the key is settled (rows are written after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info(key)
            if abs(info["reserved"]) < EPSILON or time.monotonic() > deadline:
                return info
            time.sleep(0.1)

    def chat(self, key, model):
        """One call, synchronously, through the SDK."""
        return fire([self.urls[0]], key, [chat_body(model)])[0]


@pytest.fixture
def launch(tmp_path_factory, fake_openai):
    """launch(database, instances=1, general=..., router_settings=...) -> a ready, warmed-up Cluster.

    Every instance runs 2 gevent workers. SQLite is one file for all instances; PostgreSQL a fresh
    schema, dropped after the gateways stopped."""
    with contextlib.ExitStack() as stack:
        def start(database, instances=1, general=None, router_settings=None):
            tmp = tmp_path_factory.mktemp(f"budget-{database}")
            general = dict(general or {})
            env = {}
            if database == "postgresql":
                general["database_url"] = stack.enter_context(pg_schema_url())
            else:
                env["DATABASE_URL"] = f"sqlite:///{tmp / 'keys.sqlite'}"
            general["spend_spool_dir"] = str(tmp / "spool")
            path = tmp / "config.yaml"
            path.write_text(yaml.safe_dump(gateway_config(fake_openai, general, router_settings)))
            procs = []
            for i in range(instances):
                proc = GatewayProcess(["--config", str(path), "--num_workers", "2"], env,
                                      tmp / f"gateway-{i}.log", free_port())
                stack.callback(proc.stop)  # before the schema is dropped (the stack unwinds in reverse)
                procs.append(proc)
            for proc in procs:
                proc.wait_ready()
            cluster = Cluster(procs)
            cluster.database_url = general.get("database_url") or env["DATABASE_URL"]
            cluster.warm_up()
            return cluster
        yield start


def redis_router():
    return {"redis_host": "127.0.0.1", "redis_port": 6379}


@pytest.fixture
def redis_keys(shared_redis):  # noqa: F811
    """Names of Redis keys a test creates; deleted afterwards."""
    names = []
    yield names
    if names:
        shared_redis.delete(*names)


# ---- calling -------------------------------------------------------------------------------------

async def _call(client, body):
    started = time.monotonic()
    try:
        await client.chat.completions.create(**body)
        status, code, kind, message = 200, None, None, None
    except openai.APIStatusError as exc:
        error = exc.body if isinstance(exc.body, dict) else {}
        status, code, kind, message = exc.status_code, error.get("code"), error.get("type"), error.get("message")
    return Answer(status, code, kind, started, time.monotonic(), message)


def fire(urls, key, bodies):
    """All the calls at once (one connection each), spread round-robin over the gateways."""
    async def run():
        clients = [openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=60) for url in urls]
        try:
            return await asyncio.gather(*(_call(clients[i % len(clients)], body) for i, body in enumerate(bodies)))
        finally:
            for client in clients:
                await client.close()
    return asyncio.run(run())


def fire_plain(calls):
    """Run zero-argument callables at once on threads; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def outcome(answers):
    """A short account of the answers, for assertion messages."""
    counts = {}
    for answer in answers:
        counts[(answer.status, answer.code)] = counts.get((answer.status, answer.code), 0) + 1
    return counts


class UpstreamSpans:
    """When each API request spent its time inside the fake upstream, per model: for concurrency."""

    def __init__(self, fake, monkeypatch):
        self.spans = []
        self._lock = threading.Lock()
        handler = fake._server.RequestHandlerClass  # this fake's own handler subclass
        original = handler._route
        spans, lock = self.spans, self._lock

        def route(this, path, query, headers, body, bad_json):
            started = time.monotonic()
            try:
                return original(this, path, query, headers, body, bad_json)
            finally:
                with lock:
                    spans.append((body.get("model") if isinstance(body, dict) else None, started, time.monotonic()))
        monkeypatch.setattr(handler, "_route", route)

    def peak(self, model):
        """The most requests for `model` that were inside the fake at the same moment."""
        with self._lock:
            events = sorted([(s, 1) for m, s, _ in self.spans if m == model]
                            + [(e, -1) for m, _, e in self.spans if m == model])
        level = best = 0
        for _, delta in events:  # an end sorts before a start at the same instant
            level += delta
            best = max(best, level)
        return best


@pytest.fixture
def upstream(fake_openai, monkeypatch):
    monkeypatch.setattr(fake_openai, "slow_seconds", SLOW_SECONDS)
    return UpstreamSpans(fake_openai, monkeypatch)


def worker_pids(proc):
    """The gunicorn workers: children of the master (the process the CLI started)."""
    pids = set()
    for children in Path(f"/proc/{proc.proc.pid}/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return sorted(pids)


def parse_time(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- the numbers ---------------------------------------------------------------------------------

def test_the_numbers_make_every_assertion_meaningful():
    worst, real = worst_case(), real_cost()
    assert real < worst  # the gateway holds more than a call costs, never less
    # Race: after RACE_FITS calls settle, the rest of the budget cannot cover one more call, so more
    # than RACE_FITS admitted is wrong whenever the calls arrive.
    assert (RACE_FITS + 0.5) * worst - RACE_FITS * real < worst
    # budget_duration: two calls fit, a third does not even once the first two settled.
    assert 2.5 * worst - 2 * real < worst
    assert worst_case(0.0) == real_cost(0.0)
    # tpm: a call uses more tokens than its hold, so settling never makes room for a fourth call.
    assert WORDS + MAX_TOKENS > tpm_hold()


# ---- 1, 2: the budget race -------------------------------------------------------------------------

RACE_SETUPS = {"sqlite-2-workers": ("sqlite", 1), "postgresql-2-instances-redis": ("postgresql", 2)}


def strict_race_cluster(setup, launch, request):
    """The cluster of a race setup (SQLite, one instance; or PostgreSQL, two instances sharing the
    real Redis), `budget_mode: strict`."""
    database, instances = RACE_SETUPS[setup]
    router_settings = None
    if instances > 1:
        request.getfixturevalue("shared_redis")
        router_settings = redis_router()
    return launch(database, instances=instances, general={"budget_mode": "strict"}, router_settings=router_settings)


@pytest.mark.parametrize("setup", list(RACE_SETUPS))
def test_concurrent_calls_never_reserve_past_the_budget(setup, launch, upstream, fake_openai, request):
    cluster = strict_race_cluster(setup, launch, request)
    budget = (RACE_FITS + 0.5) * worst_case()
    key, _ = cluster.generate(max_budget=budget)

    started = time.monotonic()
    answers = fire(cluster.urls, key, [chat_body("priced-slow")] * RACE_CALLS)
    took = time.monotonic() - started
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]

    assert 1 <= len(admitted) <= RACE_FITS, outcome(answers)
    assert all((a.status, a.code, a.type) == (429, "insufficient_quota", "budget_exceeded") for a in refused), \
        outcome(answers)
    # The race was real: many refusals came back before any admitted call had finished, i.e. while
    # every admitted call held its worst case and nothing was settled: far more than RACE_FITS calls
    # were in flight together, so a gateway that did not hold (or held non-atomically) admits more.
    first_done = min(a.ended for a in admitted)
    early = sum(a.ended < first_done for a in refused)
    assert early >= RACE_FITS, f"only {early} refusals before the first admitted call ended ({took:.1f} s)"
    assert fake_openai.count("slow") == len(admitted)

    info = cluster.settled(key)
    assert info["spend"] <= budget
    assert info["spend"] == pytest.approx(len(admitted) * real_cost())
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)
    assert info["max_budget"] == pytest.approx(budget)


# ---- 2b: budget leases under load (gateway/spend/leases.py) ----------------------------------------

LEASE_FITS = 600  # worst cases the budget covers: far more than a lease needs (MIN_CALLS / SHARE)
LOAD_CLIENTS = 64


def fire_bounded(urls, key, bodies, clients=LOAD_CLIENTS):
    """The calls from `clients` concurrent callers (as a load generator makes them), spread
    round-robin over the gateways."""
    async def run():
        sdk = [openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=60) for url in urls]
        gate = asyncio.Semaphore(clients)

        async def one(i, body):
            async with gate:
                return await _call(sdk[i % len(sdk)], body)
        try:
            return await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))
        finally:
            for client in sdk:
                await client.close()
    return asyncio.run(run())


def log_hold_inserts(database_url):
    """Make the database list every budget hold row inserted (a test-only trigger); returns a
    function giving the request ids inserted so far."""
    from sqlalchemy import create_engine
    from sqlalchemy import text
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE hold_log (request_id VARCHAR(64))"))
        if engine.dialect.name == "sqlite":
            connection.execute(text("CREATE TRIGGER hold_logged AFTER INSERT ON gateway_budget_holds "
                                    "BEGIN INSERT INTO hold_log VALUES (NEW.request_id); END"))
        else:
            connection.execute(text("CREATE FUNCTION log_hold() RETURNS trigger AS $$ BEGIN "
                                    "INSERT INTO hold_log VALUES (NEW.request_id); RETURN NEW; END $$ "
                                    "LANGUAGE plpgsql"))
            connection.execute(text("CREATE TRIGGER hold_logged AFTER INSERT ON gateway_budget_holds "
                                    "FOR EACH ROW EXECUTE FUNCTION log_hold()"))

    def inserted():
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT request_id FROM hold_log"))]
    return inserted


@pytest.mark.parametrize("setup", list(RACE_SETUPS))
def test_leased_budgets_admit_exactly_what_fits_under_load(setup, launch, fake_openai, request):
    """64 concurrent callers on a budget of 600 calls (each call costs exactly its worst case,
    `budget_mode: strict`): the workers hold from leases, a handful of hold rows for hundreds of
    calls; the budget is never overshot; once the load stops and the leases went back, calls one
    by one use the budget up to its last call: exactly 600 admitted in all, spend exact."""
    cluster = strict_race_cluster(setup, launch, request)
    inserted = log_hold_inserts(cluster.database_url)
    worst = worst_case(0.0)
    assert worst == real_cost(0.0)
    budget = (LEASE_FITS + 0.5) * worst
    key, _ = cluster.generate(max_budget=budget)

    answers = fire_bounded(cluster.urls, key, [chat_body("output-priced")] * (LEASE_FITS + 150))
    admitted = sum(a.status == 200 for a in answers)
    assert all((a.status, a.code) == (429, "insufficient_quota") for a in answers if a.status != 200), \
        outcome(answers)
    assert 0 < admitted <= LEASE_FITS, outcome(answers)
    holds = inserted()
    leases = [h for h in holds if h.startswith("lease:")]
    assert leases, "no lease was taken"
    # Leases stop once the headroom is under MIN_CALLS / SHARE (128) calls: those hold one by one.
    assert len(holds) - len(leases) <= 128 + LOAD_CLIENTS, (len(leases), len(holds))
    assert len(holds) < admitted / 2, (len(leases), len(holds), admitted)

    info = cluster.settled(key)  # every lease given back, every row committed
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)
    assert info["spend"] == pytest.approx(admitted * worst)
    while True:  # nothing is stranded: what is left admits calls until less than one fits
        answer = cluster.chat(key, "output-priced")
        if answer.status == 200:
            admitted += 1
            continue
        assert answer.code == "insufficient_quota", answer
        info = cluster.info(key)
        if abs(info["reserved"]) < EPSILON:
            break  # refused with nothing held anywhere: the budget is used up
        cluster.settled(key)  # refused while another worker's lease was out: again once it is back
    info = cluster.settled(key)
    assert admitted == LEASE_FITS
    assert info["spend"] == pytest.approx(LEASE_FITS * worst) and info["spend"] <= budget


# ---- 3: a worker dies mid-call ---------------------------------------------------------------------

def kill_workers_mid_call(cluster, fake, key):
    """Start a call that hangs in the upstream, SIGKILL every worker of the gateway while it is in
    flight, wait for gunicorn's new workers; returns a time after everything the call took (its
    budget hold, its parallel slot) was taken."""
    proc = cluster.procs[0]
    result = {}

    def hanging_call():
        try:
            result["resp"] = requests.post(proc.url + "/chat/completions", json=chat_body("priced-hang"),
                                           headers={"Authorization": f"Bearer {key}"}, timeout=60)
        except requests.RequestException as exc:
            result["error"] = exc
    caller = threading.Thread(target=hanging_call)
    caller.start()
    deadline = time.monotonic() + 10
    while fake.count("hang") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.count("hang") == 1, "the call never reached the upstream"
    taken_by = time.monotonic()  # holds and slots are taken before a call is routed

    workers = worker_pids(proc)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    caller.join(30)
    assert "resp" not in result, result["resp"].text  # the call died with its worker

    deadline = time.monotonic() + 20  # gunicorn starts new workers
    while set(worker_pids(proc)) & set(workers) or len(worker_pids(proc)) < 2:
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)
    proc.wait_ready()
    return taken_by


def killed_worker_cluster(launch):
    # A call cannot outlive the router timeout either, so neither a hold nor a slot has any reason
    # to outlive HOLD_SECONDS.
    return launch("sqlite", general={"budget_hold_seconds": HOLD_SECONDS},
                  router_settings={"timeout": HOLD_SECONDS})


def test_a_killed_workers_hold_expires_and_is_swept(launch, fake_openai):
    cluster = killed_worker_cluster(launch)
    worst = worst_case()
    key, _ = cluster.generate(max_budget=1.5 * worst)  # one call at a time fits
    taken_by = kill_workers_mid_call(cluster, fake_openai, key)
    info = cluster.info(key)
    assert info["reserved"] == pytest.approx(worst), info  # the dead call's hold is still there
    assert info["spend"] == 0.0
    refused = cluster.chat(key, "priced")
    assert time.monotonic() < taken_by + HOLD_SECONDS, "too slow: the hold expired before it was checked"
    assert (refused.status, refused.code) == (429, "insufficient_quota"), refused

    time.sleep(max(0.0, taken_by + HOLD_SECONDS + 0.5 - time.monotonic()))
    answer = cluster.chat(key, "priced")
    assert answer.status == 200, answer  # the expired hold was swept by this call
    info = cluster.settled(key)
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON), info
    assert info["spend"] == pytest.approx(real_cost())  # the killed call wrote no row
    assert fake_openai.count("budget-fast") == 1


def leases_by_worker(spool):
    """{worker pid: lease ids} from the workers' live journals (spend-<pid>-<token>.live.jsonl)."""
    found = {}
    for path in Path(spool).glob("spend-*.live.jsonl"):
        pid = int(path.name.split("-")[1])
        for line in path.read_bytes().splitlines():
            item = json.loads(line) if line.strip() else {}
            if isinstance(item.get("lease"), str):
                found.setdefault(pid, set()).add(item["lease"])
    return found


def lease_rows(database_url):
    from sqlalchemy import create_engine
    from sqlalchemy import text
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(
                text("SELECT request_id FROM gateway_budget_holds WHERE request_id LIKE 'lease:%'"))}
    finally:
        engine.dispose()


def test_a_stopped_workers_budget_leases_go_back_when_its_journal_is_replayed(launch, fake_openai):
    """A worker stopped by SIGTERM (a restart) while its lease still admits calls: the journal it
    leaves names the lease, and the worker that replays it gives the lease back within seconds, not
    when it expires; the other worker's lease stays (it admits for budget_lease_seconds)."""
    cluster = launch("sqlite", general={"budget_lease_seconds": 30})
    proc = cluster.procs[0]
    key, _ = cluster.generate(max_budget=1000 * worst_case())
    spool = Path(cluster.database_url.removeprefix("sqlite:///")).parent / "spool"
    deadline = time.monotonic() + 20
    while len(leases_by_worker(spool)) < 2:  # concurrent calls until both workers hold a lease
        assert time.monotonic() < deadline, leases_by_worker(spool)
        answers = fire(cluster.urls, key, [chat_body("priced")] * 8)
        assert all(answer.status == 200 for answer in answers), outcome(answers)
    held = leases_by_worker(spool)
    assert set().union(*held.values()) <= lease_rows(cluster.database_url)
    stopped, kept = sorted(held)
    os.kill(stopped, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while held[stopped] & lease_rows(cluster.database_url):
        assert time.monotonic() < deadline, f"the stopped worker's lease is still held:\n{proc.log()}"
        time.sleep(0.1)
    assert held[kept] <= lease_rows(cluster.database_url)  # still admitting in the other worker
    info = cluster.info(key)
    rows = cluster.admin("GET", "/spend/logs", params={"api_key": key})
    assert info["spend"] == pytest.approx(sum(row["spend"] for row in rows))


def test_a_killed_workers_parallel_slot_is_given_back(launch, fake_openai):
    cluster = killed_worker_cluster(launch)
    key, _ = cluster.generate(max_parallel_requests=1)
    assert cluster.chat(key, "priced").status == 200
    taken_by = kill_workers_mid_call(cluster, fake_openai, key)
    time.sleep(max(0.0, taken_by + HOLD_SECONDS + 0.5 - time.monotonic()))
    answer = cluster.chat(key, "priced")
    # The dead call can no longer be running (router timeout), so its slot must be free again.
    assert answer.status == 200, answer


# ---- 4: budget_duration ----------------------------------------------------------------------------

# (model, input price, budget in worst cases): two calls leave less than a worst case ("partly":
# the next call's hold is refused), or use the budget up exactly ("fully": spend == max_budget, so
# the key itself is refused when it is authenticated). Either way the next period must admit again.
PERIOD_CASES = {"partly-spent": ("priced", IN_PRICE, 2.5), "fully-spent": ("output-priced", 0.0, 2.0)}


@pytest.mark.parametrize("case", list(PERIOD_CASES))
def test_budget_starts_over_when_its_period_ends(case, launch, fake_openai):
    model, in_price, fits = PERIOD_CASES[case]
    cluster = launch("sqlite", general={"budget_mode": "strict"})  # soft would serve a third call
    budget = fits * worst_case(in_price)
    key, _ = cluster.generate(max_budget=budget, budget_duration=BUDGET_PERIOD)
    first = cluster.info(key)
    period_ends = parse_time(first["budget_reset_at"])

    assert [cluster.chat(key, model).status for _ in range(2)] == [200, 200]
    refused = cluster.chat(key, model)
    last_call = time.monotonic()
    assert datetime.now(period_ends.tzinfo) < period_ends, "too slow: the period ended during the calls"
    assert (refused.status, refused.code) == (429, "insufficient_quota"), refused
    spent = cluster.settled(key)
    assert spent["spend"] == pytest.approx(2 * real_cost(in_price))

    # After the period, and after every worker's cached copy of the key is gone.
    wait = max((period_ends - datetime.now(period_ends.tzinfo)).total_seconds(),
               last_call + key_module.CACHE_SECONDS - time.monotonic())
    time.sleep(max(0.0, wait) + 0.5)
    again = cluster.chat(key, model)
    assert again.status == 200, again
    info = cluster.settled(key)
    assert info["spend"] == pytest.approx(real_cost(in_price))  # started from 0 again
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)
    assert parse_time(info["budget_reset_at"]) > period_ends
    assert fake_openai.count("budget-fast") == 3


# ---- 5: per-key limits across two instances sharing Redis ------------------------------------------

def limited_cluster(launch):
    cluster = launch("postgresql", instances=2, router_settings=redis_router())
    for url in cluster.urls:
        assert requests.get(url + "/health/readiness", timeout=10).json()["router_state"] == "redis"
    return cluster


def limits_name(cluster, digest):
    """What the key's limits are counted under in the shared state (its id and creation time)."""
    from sqlalchemy import create_engine
    from sqlalchemy import text
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT id, created_at FROM gateway_keys WHERE key_hash = :h"),
                                       {"h": digest}).one()
    finally:
        engine.dispose()
    created = found.created_at if found.created_at.tzinfo else found.created_at.replace(tzinfo=timezone.utc)
    return key_module.limit_identity(found.id, created)


def assert_exactly_admitted(answers, n):
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * n + [429] * (len(answers) - n), outcome(answers)
    for answer in answers:
        if answer.status == 429:
            assert (answer.type, answer.code) == ("rate_limit_error", "rate_limit_exceeded"), answer


def test_key_tpm_limit_is_exact_across_two_instances(launch, upstream, fake_openai, shared_redis,  # noqa: F811
                                                     redis_keys):
    cluster = limited_cluster(launch)
    key, digest = cluster.generate(tpm_limit=3 * tpm_hold() + tpm_hold() // 2)
    window = f"gateway:key-tpm:{limits_name(cluster, digest)}"  # limits follow the key, not its hash
    redis_keys.append(window)
    answers = fire(cluster.urls, key, [chat_body("priced-slow")] * 10)
    assert_exactly_admitted(answers, 3)
    assert fake_openai.count("slow") == 3
    assert upstream.peak("slow") == 3
    assert shared_redis.exists(window)  # the window lives in Redis


def test_key_max_parallel_requests_is_exact_across_two_instances(launch, upstream, fake_openai,
                                                                shared_redis, redis_keys):  # noqa: F811
    cluster = limited_cluster(launch)
    key, digest = cluster.generate(max_parallel_requests=2)
    gauge = f"gateway:key-parallel:{limits_name(cluster, digest)}"
    redis_keys.append(gauge)
    answers = fire(cluster.urls, key, [chat_body("priced-slow")] * 10)
    assert_exactly_admitted(answers, 2)
    assert upstream.peak("slow") == 2  # never more than 2 in flight at the upstream
    assert fake_openai.count("slow") == 2

    # Every slot is given back: the gauge returns to 0 and two calls run together again.
    deadline = time.monotonic() + 5
    while float(shared_redis.get(gauge) or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert float(shared_redis.get(gauge) or 0) == 0
    assert_exactly_admitted(fire(cluster.urls, key, [chat_body("priced-slow")] * 2), 2)
