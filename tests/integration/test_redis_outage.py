"""Redis killed and restarted mid-load (#17 item 5), end to end.

One private redis-server (tests/integration/redis_server.py), one fresh PostgreSQL schema, and two
clusters of two real gateway instances each (2 gevent workers apiece) sharing both: one cluster with
`router_settings.redis_outage_limits: local` (the default), one with `refuse`. The response cache is
on Redis too. Client threads call both clusters through the openai SDK (no keep-alive, so every
call lands on whichever worker the kernel picks) while Redis is killed (SIGKILL) and started again,
empty. Each call is tagged with the phase it started and ended in:

- up: Redis answers (before the kill);
- down: Redis is dead;
- returning: Redis runs again but a worker may still be in its few seconds of local state;
- back: every worker of every instance said Redis is reachable again (awaited, in the logs and
  readiness).

The scenario runs once (a module fixture); each test checks one promise against what it recorded.
"""

import collections
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import openai
import pytest
import requests
import yaml
from sqlalchemy import create_engine
from sqlalchemy import text

from gateway.access import keys as key_module
from gateway.routing import dbmodels
from gateway.routing.state import RedisState
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.redis_server import RedisServer
from tests.pg import schema_url

pytestmark = pytest.mark.integration

MASTER = "sk-master-redis-outage-" + uuid.uuid4().hex[:8]
LIMIT = 4  # the limited keys' rpm_limit
WORKERS = 2
PACE = 0.1  # seconds between one load thread's calls
STATE_DOWN = "router state is per instance until it is back"
STATE_BACK = "Redis reachable again; router state"
UNREACHABLE = {"local": "redis unreachable (using local state)",
               "refuse": "redis unreachable (calls under a rate limit refused)"}
# A change made on one instance while Redis is down reaches another within: the database poll (models)
# or the key cache's life (keys), plus the seconds a worker takes to notice Redis is down.
MODEL_SECONDS = dbmodels.POLL_SECONDS + dbmodels.REMOTE_CHECK_SECONDS + RedisState.RETRY_AFTER + 3
KEY_SECONDS = key_module.CACHE_SECONDS + 3
RECOVERY_SECONDS = RedisState.RETRY_AFTER + 10


@dataclass
class Call:
    job: int  # the load thread
    cluster: str  # local, refuse
    instance: int  # 0 or 1 within the cluster
    who: str  # the key's name in the scenario ("master" for the master key)
    model: str
    started: str  # phase
    ended: str
    status: int | None
    code: str | None = None
    retry_after: str | None = None
    request_id: str | None = None
    cache: str | None = None
    error: str | None = None
    seconds: float = 0.0


class Phase:
    def __init__(self):
        self.name = "up"


def sdk(url, key):
    """An openai client without retries or kept-alive connections (each call: a fresh connection)."""
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30,
                         http_client=httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)))


def chat(client, model, prompt):
    """(status, code, Retry-After, request id, x-cache) of one chat call through the SDK."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}])
        answer = raw.parse()
        assert answer.choices[0].message.content == f"Hello from fake upstream: {prompt}"
        return 200, None, None, raw.headers.get("x-request-id"), raw.headers.get("x-cache")
    except openai.APIStatusError as exc:
        headers = exc.response.headers
        return exc.status_code, exc.code, headers.get("retry-after"), headers.get("x-request-id"), None


class Cluster:
    """Two gateway instances with one config (each its own spend spool)."""

    def __init__(self, mode, fake, redis_url, db_url, folder):
        self.mode = mode
        self.instances = []
        for i in range(2):
            place = folder / f"{mode}-{i}"
            place.mkdir()
            config = cluster_config(mode, fake, redis_url, db_url, place / "spool")
            (place / "config.yaml").write_text(yaml.safe_dump(config))
            self.instances.append(GatewayProcess(
                ["--config", str(place / "config.yaml"), "--num_workers", str(WORKERS)],
                {"DATABASE_URL": db_url}, place / "gw.log", free_port()))

    @property
    def urls(self):
        return [gw.url for gw in self.instances]

    def log_count(self, i, text_):
        return self.instances[i].log().count(text_)


def cluster_config(mode, fake, redis_url, db_url, spool):
    base = {"api_base": fake.url + "/v1", "api_key": fake.api_key}
    return {
        "model_list": [
            {"model_name": "gpt-3.5-turbo", "litellm_params": {"model": "openai/gpt-3.5-turbo", **base}},
            # a deployment limit (never reached): checked in Redis, or locally / refused in an outage
            {"model_name": "limited-dep", "litellm_params": {"model": "openai/gpt-4o", "rpm": 100000, **base},
             "model_info": {"id": f"limited-dep-{mode}"}},
            {"model_name": "cached", "litellm_params": {"model": "openai/cached-model", **base}}],
        "general_settings": {"master_key": MASTER, "database_url": db_url, "store_model_in_db": True,
                             "spend_spool_dir": str(spool)},
        "router_settings": {"redis_url": redis_url, "redis_outage_limits": mode},
        "litellm_settings": {"cache": True, "cache_params": {"type": "redis", "url": redis_url}},
    }


def admin(url, path, body):
    resp = requests.post(url + path, headers={"Authorization": f"Bearer {MASTER}"}, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def readiness(url):
    started = time.monotonic()
    body = requests.get(url + "/health/readiness", timeout=10).json()
    return body, time.monotonic() - started


def await_true(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.1)


def burst(urls, key, n):
    """n calls at once, alternating over `urls`: their statuses."""
    clients = [sdk(url, key) for url in urls]
    with ThreadPoolExecutor(n) as pool:
        return [r[0] for r in pool.map(lambda i: chat(clients[i % len(urls)], "gpt-3.5-turbo",
                                                      f"burst {uuid.uuid4().hex}"), range(n))]


class Load:
    """Client threads, each calling one (cluster, key, model) on both instances in turn until stopped."""

    def __init__(self, phase, jobs):
        self.phase = phase
        self.calls = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, *job), daemon=True) for i, job in enumerate(jobs)]

    def _run(self, job, cluster, who, key, model, first):
        clients = [sdk(url, key) for url in cluster.urls]
        n = first
        while not self._stop.is_set():
            instance, started, began = n % 2, self.phase.name, time.monotonic()
            try:
                status, code, retry, request_id, cache = chat(clients[instance], model, f"load {uuid.uuid4().hex}")
                error = None
            except Exception as exc:  # noqa: BLE001  (recorded: the test says what went wrong)
                status, code, retry, request_id, cache, error = None, None, None, None, None, repr(exc)[:300]
            with self._lock:
                self.calls.append(Call(job, cluster.mode, instance, who, model, started, self.phase.name, status,
                                       code, retry, request_id, cache, error, time.monotonic() - began))
            n += 1
            self._stop.wait(PACE)

    def start(self):
        for thread in self._threads:
            thread.start()

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def each_job(self, n, **match):
        """Whether every load thread made at least n calls that match."""
        found = collections.Counter(c.job for c in self.where(**match))
        return all(found[i] >= n for i in range(len(self._threads)))

    def where(self, **match):
        with self._lock:
            return [c for c in self.calls if all(getattr(c, k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def scenario(fake_openai, tmp_path_factory):
    try:
        server = RedisServer()
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("redis-outage")
    began = time.monotonic()
    with server, schema_url() as db_url:
        clusters = {mode: Cluster(mode, fake_openai, server.url, db_url, folder) for mode in ("local", "refuse")}
        try:
            for cluster in clusters.values():
                for gw in cluster.instances:
                    gw.wait_ready()
            ready = time.monotonic() - began
            record = run(server, clusters, fake_openai, db_url)
        finally:
            with ThreadPoolExecutor(4) as pool:  # each waits a few seconds for its workers to go
                list(pool.map(GatewayProcess.stop, [gw for c in clusters.values() for gw in c.instances]))
        record["logs"] = {mode: [gw.log() for gw in c.instances] for mode, c in clusters.items()}
        record["seconds"] = time.monotonic() - began
        record["ready_seconds"] = ready
        print(f"\nscenario: {record['seconds']:.1f} s (ready after {ready:.1f} s, then {record['marks']}); "
              f"{len(record['load'].calls)} load calls; outage admitted {record['outage_admitted']} "
              f"{dict(record['outage_admitted_per_instance'])} (limit {LIMIT}, 2 instances); "
              f"recovery {record['recovery_seconds']:.1f} s; changes seen after {record['model_seen_after']:.1f} s "
              f"(model), {record['block_seen_after']:.1f} s (key); statuses {statuses(record['load'])}; "
              f"{len(record['rows']['wanted'])} successes, "
              f"{sum(record['rows']['rows'][i] for i in record['rows']['wanted'])} success rows for them")
        yield record


def statuses(load):
    """{(cluster, phase): {status: calls}} of the load, for the summary line."""
    found = collections.defaultdict(collections.Counter)
    for c in load.calls:
        found[f"{c.cluster}/{c.started}"][c.status] += 1
    return {k: dict(v) for k, v in found.items()}


def run(server, clusters, fake, db_url):
    """The scenario: what every test below checks."""
    local, refuse = clusters["local"], clusters["refuse"]
    a, b = local.urls
    record = {"readiness": collections.defaultdict(list), "extra_ids": [], "marks": {}}
    t0 = time.monotonic()

    def mark(name):
        record["marks"][name] = round(time.monotonic() - t0, 1)
    keys = {name: admin(a, "/key/generate", body)["key"] for name, body in (
        ("limited", {"rpm_limit": LIMIT}), ("blocked-later", {}), ("refuse-limited", {"rpm_limit": LIMIT}),
        ("refuse-free", {}))}
    record["burst_before"] = burst(local.urls, keys["limited"], 3 * LIMIT)

    master_a, master_b = sdk(a, MASTER), sdk(b, MASTER)
    cached = [chat(master_a, "cached", "cache me"), chat(master_b, "cached", "cache me")]
    record["cache_before"] = [c[4] for c in cached]
    record["extra_ids"] += [c[3] for c in cached]
    blocked_on_b = sdk(b, keys["blocked-later"])
    for _ in range(4):  # cached on B's workers
        status, *_rest, request_id, _cache = chat(blocked_on_b, "gpt-3.5-turbo", "before the block")
        assert status == 200
        record["extra_ids"].append(request_id)
    for cluster in clusters.values():
        for url in cluster.urls:
            record["readiness"]["up"].append((cluster.mode, *readiness(url)))

    phase = Phase()
    load = Load(phase, [(local, "limited", keys["limited"], "gpt-3.5-turbo", 0),
                        (local, "limited", keys["limited"], "gpt-3.5-turbo", 1),
                        (local, "master", MASTER, "limited-dep", 0),
                        (refuse, "refuse-limited", keys["refuse-limited"], "gpt-3.5-turbo", 0),
                        (refuse, "refuse-limited", keys["refuse-limited"], "gpt-3.5-turbo", 1),
                        (refuse, "refuse-free", keys["refuse-free"], "gpt-3.5-turbo", 0),
                        (refuse, "refuse-free", keys["refuse-free"], "limited-dep", 1)])
    record["load"] = load
    load.start()
    try:
        await_true(lambda: load.each_job(2, started="up", ended="up"), 20, "load before the kill")
        mark("killing")
        server.stop()
        phase.name = "down"
        mark("down")
        outage(record, clusters, keys, load, fake)
        mark("restarting")
        phase.name = "returning"
        server.start()  # same port, empty
        returned = time.monotonic()
        await_true(lambda: recovered(clusters, record), RECOVERY_SECONDS, "every worker back on Redis")
        record["recovery_seconds"] = time.monotonic() - returned
        phase.name = "back"
        mark("back")
        await_true(lambda: load.each_job(2, started="back", ended="back"), 20, "load after the return")
    finally:
        load.stop()
    mark("stopped")
    after(record, clusters, keys, fake)
    mark("after")
    record["rows"] = ledger(db_url, load, record)
    mark("ledger")
    return record


def outage(record, clusters, keys, load, fake):
    """While Redis is dead: readiness, a model and a key changed on A seen on B, the cache bypassed."""
    local = clusters["local"]
    a, b = local.urls
    for cluster in clusters.values():
        for url in cluster.urls:
            record["readiness"]["down"].append((cluster.mode, *readiness(url)))
    changed = time.monotonic()
    admin(a, "/model/new", {"model_name": "added-in-outage", "litellm_params": {
        "model": "openai/gpt-3.5-turbo", "api_base": fake.url + "/v1", "api_key": fake.api_key}})
    admin(a, "/key/block", {"key": keys["blocked-later"]})
    master_b, blocked_on_b = sdk(b, MASTER), sdk(b, keys["blocked-later"])
    record["model_seen_after"] = await_streak(lambda: chat(master_b, "added-in-outage", "new model")[0] == 200,
                                              changed, MODEL_SECONDS, "the model added on A served by B")
    record["block_seen_after"] = await_streak(
        lambda: chat(blocked_on_b, "gpt-3.5-turbo", "blocked?")[0] in (401, 403), changed, KEY_SECONDS,
        "the key blocked on A refused by B")
    upstream_before = fake.count("cached-model")
    during = [chat(sdk(url, MASTER), "cached", "cache me") for url in local.urls]
    record["cache_during"] = [(status, cache) for status, _code, _retry, _id, cache in during]
    record["extra_ids"] += [c[3] for c in during]
    record["cache_during_upstream"] = fake.count("cached-model") - upstream_before
    # Enough outage load: both instances of the local cluster past the limit, the refuse cluster refusing.
    await_true(lambda: all(len(load.where(cluster="local", who="limited", instance=i, started="down",
                                          ended="down")) > LIMIT + 2 for i in (0, 1))
               and load.each_job(4, started="down", ended="down"), 20,
               f"load during the outage: {[(c.job, c.started, c.status, round(c.seconds, 2)) for c in load.calls[-20:]]}")
    admitted = [c for c in load.where(cluster="local", who="limited", started="down", ended="down") if c.status == 200]
    record["outage_admitted"] = len(admitted)
    record["outage_admitted_per_instance"] = collections.Counter(c.instance for c in admitted)


def await_streak(condition, since, seconds, what, streak=6):
    """Seconds from `since` until `condition` held `streak` times in a row (calls on fresh connections
    land on either worker), within `seconds`."""
    deadline, row = since + seconds, 0
    while row < streak:
        row = row + 1 if condition() else 0
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        if row == 0:
            time.sleep(0.1)
    return time.monotonic() - since


def recovered(clusters, record):
    """Every instance's readiness says Redis, and every worker that said it was down said it is back."""
    for cluster in clusters.values():
        for i, url in enumerate(cluster.urls):
            body, _seconds = readiness(url)  # a fresh connection: either worker, which PINGs if due
            if body["router_state"] != "redis":
                return False
            if cluster.log_count(i, STATE_BACK) < cluster.log_count(i, STATE_DOWN):
                return False
    for cluster in clusters.values():
        for url in cluster.urls:
            record["readiness"]["back"].append((cluster.mode, *readiness(url)))
    return True


def after(record, clusters, keys, fake):
    """Redis is back: the limit is one again for the whole cluster, changes travel, the cache works."""
    local = clusters["local"]
    a, b = local.urls
    fresh = admin(a, "/key/generate", {"rpm_limit": LIMIT})["key"]
    record["burst_after"] = burst(local.urls, fresh, 3 * LIMIT)
    changed = time.monotonic()
    admin(a, "/model/new", {"model_name": "added-after", "litellm_params": {
        "model": "openai/gpt-3.5-turbo", "api_base": fake.url + "/v1", "api_key": fake.api_key}})
    master_b = sdk(b, MASTER)
    record["model_after_seen_after"] = await_streak(lambda: chat(master_b, "added-after", "x")[0] == 200, changed,
                                                    MODEL_SECONDS, "a model added after Redis came back, on B")
    master_a = sdk(a, MASTER)

    def hit():
        prompt = f"after {uuid.uuid4().hex}"
        first, second = chat(master_a, "cached", prompt), chat(master_b, "cached", prompt)
        record["extra_ids"] += [first[3], second[3]]
        return (first[4], second[4]) == ("MISS", "HIT")
    await_true(hit, RECOVERY_SECONDS, "the response cache back on Redis")
    limited = admin(a, "/key/generate", {"rpm_limit": LIMIT})["key"]
    record["refuse_fresh_after"] = [chat(sdk(url, limited), "gpt-3.5-turbo", "after")[0]
                                    for url in clusters["refuse"].urls]


def ledger(db_url, load, record):
    """The ledger's success rows by request id, once every successful call has one (or the deadline)."""
    wanted = collections.Counter([c.request_id for c in load.calls if c.status == 200]
                                 + [i for i in record["extra_ids"] if i is not None])
    engine = create_engine(db_url)
    try:
        deadline = time.monotonic() + 15
        while True:
            with engine.connect() as connection:
                rows = collections.Counter(r.request_id for r in connection.execute(
                    text("SELECT request_id FROM gateway_spend WHERE status = :s"), {"s": "success"}))
            if all(rows[i] >= 1 for i in wanted) or time.monotonic() > deadline:
                return {"rows": rows, "wanted": wanted}
            time.sleep(0.25)
    finally:
        engine.dispose()


# ---- the tests --------------------------------------------------------------------------------

def test_limits_are_exact_before_and_after_and_per_instance_during_the_outage(scenario):
    assert sorted(scenario["burst_before"]) == [200] * LIMIT + [429] * (2 * LIMIT)
    per_instance = scenario["outage_admitted_per_instance"]
    assert all(per_instance[i] <= LIMIT for i in (0, 1)), per_instance  # each instance exact on its own
    assert LIMIT <= scenario["outage_admitted"] <= 2 * LIMIT, per_instance  # the documented bound
    assert sorted(scenario["burst_after"]) == [200] * LIMIT + [429] * (2 * LIMIT)  # one window again


def test_local_mode_clients_see_only_limit_429s(scenario):
    calls = scenario["load"].where(cluster="local")
    assert calls
    bad = [c for c in calls if not (c.status == 200 or (c.status == 429 and c.code == "rate_limit_exceeded"
                                                          and c.who == "limited"))]
    assert not bad, bad[:10]
    assert all(c.status == 200 for c in calls if c.who == "master")  # the deployment limit, locally


def test_refuse_mode_refuses_limited_calls_during_the_outage_only(scenario):
    load = scenario["load"]
    during = load.where(cluster="refuse", who="refuse-limited", started="down", ended="down")
    assert during and all((c.status, c.code) == (503, "rate_limit_state_unavailable") for c in during), during[:5]
    assert all(c.retry_after is not None and 1 <= int(c.retry_after) <= 5 for c in during)
    free = load.where(cluster="refuse", who="refuse-free", started="down", ended="down")
    assert [c for c in free if c.model == "gpt-3.5-turbo"]
    assert all(c.status == 200 for c in free if c.model == "gpt-3.5-turbo"), free[:5]  # no limit: served
    refused_dep = [c for c in free if c.model == "limited-dep"]  # the deployment's rpm needs Redis too
    assert refused_dep and all((c.status, c.code) == (503, "rate_limit_state_unavailable") for c in refused_dep)
    back = load.where(cluster="refuse", started="back", ended="back")
    assert back and all(c.status in (200, 429) for c in back), back[:5]
    # Served again: Redis came back empty, so the key's first LIMIT calls since then were admitted.
    again = load.where(cluster="refuse", who="refuse-limited", started="returning") + back
    assert any(c.status == 200 for c in again if c.who == "refuse-limited")
    assert scenario["refuse_fresh_after"] == [200, 200]
    returning = load.where(cluster="refuse", started="returning")  # a worker may be seconds from noticing
    assert all(c.status in (200, 429) or c.code == "rate_limit_state_unavailable" for c in returning)
    before = load.where(cluster="refuse", started="up", ended="up")
    assert before and all(c.status in (200, 429) for c in before)
    assert all(c.error is None for c in load.calls), [c for c in load.calls if c.error][:5]


def test_readiness_says_the_mode_and_whether_redis_answers(scenario):
    for phase, expected in (("up", lambda mode: "redis"), ("down", UNREACHABLE.get), ("back", lambda mode: "redis")):
        seen = scenario["readiness"][phase]
        assert len(seen) >= 4, phase
        for mode, body, seconds in seen:
            assert body["router_state"] == expected(mode), (phase, mode, body)
            assert body["redis_outage_limits"] == mode
            assert body["status"] == "healthy"
            assert seconds < 1.5, f"readiness took {seconds:.2f} s ({phase})"


def test_the_log_says_down_and_back_once_per_worker_with_what_limits_do(scenario):
    for mode, logs in scenario["logs"].items():
        for log in logs:
            down = [line for line in log.splitlines() if STATE_DOWN in line]
            assert 1 <= len(down) <= WORKERS, down  # once per worker that noticed, not once per call
            meanwhile = "counted per instance" if mode == "local" else "refused (503)"
            assert all(meanwhile in line for line in down), down
            assert log.count(STATE_BACK) == len(down)


def test_the_response_cache_falls_through_during_the_outage_and_works_after(scenario):
    assert scenario["cache_before"] == ["MISS", "HIT"]
    assert scenario["cache_during"] == [(200, "MISS"), (200, "MISS")]  # no error: the upstream answered
    assert scenario["cache_during_upstream"] == 2
    # and after: `hit()` awaited a MISS then a HIT on the other instance (the scenario's own check)


def test_changes_made_during_the_outage_reach_the_other_instance(scenario):
    assert scenario["model_seen_after"] < MODEL_SECONDS
    assert scenario["block_seen_after"] < KEY_SECONDS
    assert scenario["model_after_seen_after"] < MODEL_SECONDS


def test_every_successful_call_has_exactly_one_ledger_row(scenario):
    rows, wanted = scenario["rows"]["rows"], scenario["rows"]["wanted"]
    assert all(n == 1 for n in wanted.values()), "a request id answered twice"
    missing = [i for i in wanted if rows[i] == 0]
    doubled = [i for i in wanted if rows[i] > 1]
    assert not missing, f"{len(missing)} of {len(wanted)} successful calls have no row"
    assert not doubled
    refused = {c.request_id for c in scenario["load"].calls if c.status != 200 and c.request_id}
    assert not [i for i in refused if rows[i]], "a refused call has a success row"


def test_bounded_in_time(scenario):
    """The scenario itself (from four ready instances to four stopped ones); starting them is the
    machine's business (seconds when idle, far more under a load of other tests)."""
    assert scenario["seconds"] - scenario["ready_seconds"] < 60, scenario["marks"]
