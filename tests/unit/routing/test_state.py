"""Router state backends: LocalState exact across processes, RedisState exact across objects and
falling back to local state (with one warning) when Redis cannot be reached.

Redis tests use the real server at 127.0.0.1:6379. With CI=true a missing Redis fails them;
elsewhere they are skipped with the reason.
"""

import logging
import multiprocessing
import os
import socket
import sqlite3
import threading
import time
import uuid

import pytest

from gateway import errors
from gateway.config.sections import router_section
from gateway.routing import state as state_module
from gateway.routing.state import LocalState
from gateway.routing.state import RedisState


def build_state(router_settings):
    """The state backend for a router_settings mapping, checked into RouterSettings as at load."""
    return state_module.build_state(router_section(router_settings, {}))


def redis_settings(router_settings, environ):
    """state.redis_settings for a router_settings mapping, checked into RouterSettings as at load."""
    return state_module.redis_settings(router_section(router_settings, {}), environ=environ)


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


# ---- LocalState -----------------------------------------------------------------

@pytest.fixture
def local(tmp_path):
    return LocalState(str(tmp_path / "state.sqlite"))


def test_local_window_record_and_expiry(local):
    t0 = 2_000_000.0
    local.record("tpm:a", 100, now=t0)
    local.record("tpm:a", 50, now=t0 + 30)
    assert local.window("tpm:a", now=t0 + 30) == 150
    assert local.window("tpm:a", now=t0 + 60) == 50  # the first entry left the window
    assert local.windows(["tpm:a", "tpm:b"], now=t0 + 30) == [150, 0]


def test_local_admit_amounts(local):
    t0 = 2_000_000.0
    assert local.admit("tpm:x", 100, amount=60, now=t0) == (True, 0.0)
    allowed, wait = local.admit("tpm:x", 100, amount=50, now=t0 + 1)
    assert not allowed and wait == pytest.approx(59.0)
    assert local.admit("tpm:x", 100, amount=40, now=t0 + 1) == (True, 0.0)


def test_local_gauges_and_expiring_values(local):
    assert local.add("inflight:a", 1) == 1.0
    assert local.add("inflight:a", 1) == 2.0
    assert local.add("inflight:a", -5) == 0.0  # never negative
    local.set("cool:a", 123.5, 60)
    local.set("cool:b", 1.0, 0.05)
    time.sleep(0.1)
    assert local.get_many(["cool:a", "cool:b", "cool:c"]) == [123.5, None, None]
    assert local.status() == "local"


def test_local_state_survives_a_fork_of_its_owner(tmp_path):
    """A connection opened before a fork is not reused by the child (gunicorn preloads, then forks)."""
    state = LocalState(str(tmp_path / "s.sqlite"))
    state.add("g", 1)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_add_one, args=(state,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert state.add("g", 0) == 2.0


def _add_one(state):
    state.add("g", 1)


def _admit_many(path, n, limit, start, results):
    """Worker: wait for the start signal, then try n admits; report how many got through."""
    state = LocalState(path)
    start.wait(30)
    admitted = sum(1 for _ in range(n) if state.admit("rpm:shared", limit)[0])
    results.put(admitted)


def test_local_state_exact_across_two_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    LocalState(path).window("init")  # the file exists (see the first-open test below for why)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_admit_many, args=(path, 50, 30, start, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # both are importing and waiting on the event
    start.set()
    counts = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sum(counts) == 30, counts
    assert LocalState(path).window("rpm:shared") == 30


def test_first_open_waits_for_another_workers_lock(tmp_path):
    """Two workers opening a fresh state file at once: the second one waits for the first one's
    lock (as every statement does, up to the 10 s busy timeout) instead of failing the call with
    `database is locked` while switching the file to WAL."""
    path = str(tmp_path / "fresh.sqlite")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE busy (a)")
    other.execute("BEGIN IMMEDIATE")  # another worker is in the middle of a write
    other.execute("INSERT INTO busy VALUES (1)")
    releaser = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        started = time.monotonic()
        assert LocalState(path).admit("rpm:first", 5) == (True, 0.0)
        assert time.monotonic() - started >= 0.4
    finally:
        releaser.join()
        other.close()


def test_local_state_exact_across_threads(local):
    admitted = []

    def run():
        admitted.append(sum(1 for _ in range(40) if local.admit("rpm:t", 25)[0]))
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 25


def test_default_local_path_is_per_instance(monkeypatch):
    from gateway.routing.state import default_local_path
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    assert str(os.getpid()) in default_local_path()
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/23.0.0")
    # gunicorn workers of one master share the master's file
    assert str(os.getppid()) in default_local_path()


# ---- Redis configuration -----------------------------------------------------------

def test_redis_settings_sources():
    assert redis_settings({}, environ={}) is None
    url, kw = redis_settings({"redis_host": "h", "redis_port": 6380, "redis_password": "pw"}, environ={})
    assert url is None and (kw["host"], kw["port"], kw["password"]) == ("h", 6380, "pw")
    url, kw = redis_settings({}, environ={"REDIS_HOST": "e", "REDIS_PORT": "7000"})
    assert (kw["host"], kw["port"]) == ("e", 7000) and "password" not in kw
    url, _ = redis_settings({"redis_url": "redis://x:1/0"}, environ={})
    assert url == "redis://x:1/0"


def test_build_state_without_redis_is_local(tmp_path, monkeypatch):
    for name in ("REDIS_HOST", "REDIS_URL", "REDIS_PORT", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    state = build_state({"local_state_path": str(tmp_path / "x.sqlite")})
    assert isinstance(state, LocalState) and state.path == str(tmp_path / "x.sqlite")


# ---- RedisState on the real server --------------------------------------------------

@pytest.fixture
def redis_client():
    """A client for the real Redis; CI must have it, a developer machine may not."""
    import redis
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__})")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A key prefix no other run uses; its keys are deleted afterwards."""
    value = f"gateway-test-{uuid.uuid4().hex}:"
    yield value
    keys = list(redis_client.scan_iter(match=value + "*"))
    if keys:
        redis_client.delete(*keys)


def redis_state(prefix, tmp_path, name="fallback"):
    import redis
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2, socket_connect_timeout=2)
    return RedisState(client, LocalState(str(tmp_path / f"{name}.sqlite")), prefix=prefix)


def test_redis_sliding_window_exact(redis_client, prefix, tmp_path):
    state = redis_state(prefix, tmp_path)
    t0 = time.time()
    for i in range(3):
        assert state.admit("rpm:x", 3, now=t0 + i) == (True, 0.0)
    allowed, wait = state.admit("rpm:x", 3, now=t0 + 10)
    assert not allowed and wait == pytest.approx(50.0)
    assert not state.admit("rpm:x", 3, now=t0 + 59.9)[0]
    assert state.admit("rpm:x", 3, now=t0 + 60.0) == (True, 0.0)
    assert state.window("rpm:x", now=t0 + 60.0) == 3
    assert redis_client.exists(prefix + "rpm:x")  # it really is in Redis...
    assert state.fallback.window("rpm:x") == 0  # ...and not in the local fallback


def test_redis_record_window_gauges_and_values(redis_client, prefix, tmp_path):
    state = redis_state(prefix, tmp_path)
    t0 = time.time()
    state.record("tpm:a", 120, now=t0 - 70)  # outside the window
    state.record("tpm:a", 100, now=t0)
    state.record("tpm:a", 2.5, now=t0)
    assert state.window("tpm:a", now=t0) == pytest.approx(102.5)
    assert state.windows(["tpm:a", "tpm:none"], now=t0) == [pytest.approx(102.5), 0]
    assert state.add("inflight:a", 1) == 1.0
    assert state.add("inflight:a", 2) == 3.0
    assert state.add("inflight:a", -3) == 0.0
    state.set("cool:a", 1234.5, 60)
    state.set("cool:b", 1.0, 0.05)
    time.sleep(0.15)
    assert state.get_many(["cool:a", "cool:b", "cool:c"]) == [1234.5, None, None]
    assert 0 < redis_client.pttl(prefix + "cool:a") <= 60000
    assert state.status() == "redis"


def _redis_admits(state, n, limit, barrier, out):
    barrier.wait()
    out.append(sum(1 for _ in range(n) if state.admit("rpm:shared", limit)[0]))


def test_redis_exact_across_two_state_objects(redis_client, prefix, tmp_path):
    """Two RedisState objects (two gateway instances) admit exactly `limit` between them."""
    states = [redis_state(prefix, tmp_path, "a"), redis_state(prefix, tmp_path, "b")]
    barrier, out = threading.Barrier(2), []
    threads = [threading.Thread(target=_redis_admits, args=(s, 50, 30, barrier, out)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(out) == 30, out
    assert states[0].window("rpm:shared") == 30
    assert states[0].fallback.window("rpm:shared") == states[1].fallback.window("rpm:shared") == 0


def _redis_admit_process(prefix, fallback_path, n, limit, start, results):
    import redis
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2)
    state = RedisState(client, LocalState(fallback_path), prefix=prefix)
    start.wait(30)
    results.put(sum(1 for _ in range(n) if state.admit("rpm:shared", limit)[0]))


def test_redis_exact_across_two_processes(redis_client, prefix, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_redis_admit_process,
                         args=(prefix, str(tmp_path / f"fb{i}.sqlite"), 50, 30, start, results))
             for i in range(2)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)
    start.set()
    counts = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert sum(counts) == 30, counts


# ---- Redis unreachable ------------------------------------------------------------------

def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_unreachable_falls_back_to_local_and_warns_once(tmp_path, caplog):
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(),
                         "local_state_path": str(tmp_path / "local.sqlite")})
    assert isinstance(state, RedisState)
    caplog.set_level(logging.WARNING, logger="gateway.routing.state")
    started = time.monotonic()
    first = state.admit("rpm:x", 3)[0]
    first_seconds = time.monotonic() - started
    results = [first] + [state.admit("rpm:x", 3)[0] for _ in range(4)]
    assert results == [True, True, True, False, False]  # the limit still holds, per instance
    state.record("tpm:x", 10)
    assert state.window("tpm:x") == 10
    assert state.windows(["tpm:x", "rpm:x"]) == [10, 3]
    assert state.add("inflight:x", 2) == 2.0
    state.set("cool:x", 42.0, 60)
    assert state.get_many(["cool:x", "inflight:x"]) == [42.0, 2.0]
    # everything landed in the local fallback
    assert state.fallback.window("rpm:x") == 3 and state.fallback.get_many(["cool:x"]) == [42.0]
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert state.status() == "redis unreachable (using local state)"
    # A refused connection with 0.25 s socket timeouts must not hold the call up for seconds.
    assert first_seconds < 2.0, f"the first call took {first_seconds:.1f} s to fall back"


def test_redis_back_again_is_used_again_and_said_once(tmp_path, caplog, monkeypatch):
    from tests.integration.redis_server import RedisServer
    try:
        server = RedisServer()  # a private one: this test stops and restarts it
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    monkeypatch.setattr(RedisState, "RETRY_AFTER", 0.0)  # try Redis again on every call
    caplog.set_level(logging.WARNING, logger="gateway.routing.state")
    with server:
        state = build_state({"redis_host": "127.0.0.1", "redis_port": server.port,
                             "local_state_path": str(tmp_path / "local.sqlite")})
        assert state.admit("rpm:z", 100)[0]
        assert state.status() == "redis"
        server.stop()
        for _ in range(2):
            assert state.admit("rpm:z", 100)[0]  # the pooled connection is dead: local state
        assert state.fallback.window("rpm:z") == 2
        server.start()  # same port, empty
        for _ in range(3):
            state.admit("rpm:z", 100)
        assert state.status() == "redis"
        assert state.window("rpm:z") >= 2  # counted in the restarted Redis again
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1, messages
    assert sum("Redis reachable again" in m for m in messages) == 1, messages


def test_redis_still_unreachable_after_retry_does_not_warn_again(tmp_path, caplog, monkeypatch):
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(),
                         "local_state_path": str(tmp_path / "local.sqlite")})
    monkeypatch.setattr(RedisState, "RETRY_AFTER", 0.0)  # try Redis on every call
    caplog.set_level(logging.WARNING, logger="gateway.routing.state")
    for _ in range(3):
        assert state.admit("rpm:y", 100)[0]
    assert len([r for r in caplog.records if "Redis unreachable" in r.getMessage()]) == 1
    assert state.fallback.window("rpm:y") == 3


def test_redis_status_answers_quickly_when_unreachable(tmp_path):
    """Readiness calls status(): it must answer within a probe's usual 1-2 s timeout."""
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(),
                         "local_state_path": str(tmp_path / "local.sqlite")})
    started = time.monotonic()
    assert state.status() == "redis unreachable (using local state)"
    assert time.monotonic() - started < 2.0


def test_redis_unreachable_under_refuse_refuses_limits_only_and_says_so_once(tmp_path, caplog):
    """router_settings.redis_outage_limits: refuse: a limit's check is a 503 with Retry-After; usage,
    gauges, cooldowns and the health check's election still go to the local state."""
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(), "redis_outage_limits": "refuse",
                         "local_state_path": str(tmp_path / "local.sqlite")})
    caplog.set_level(logging.WARNING, logger="gateway.routing.state")
    for check in (lambda: state.admit("rpm:x", 3), lambda: state.acquire("parallel:x", 2, "m", ttl=60),
                  lambda: state.window("tpm:x", is_limit=True), lambda: state.admit("rpm:x", 3)):
        with pytest.raises(errors.LimitStateUnavailableError) as info:
            check()
        assert info.value.status == 503 and info.value.code == "rate_limit_state_unavailable"
        assert 1 <= int(info.value.headers["Retry-After"]) <= 5
    assert state.fallback.window("rpm:x") == 0  # nothing was counted locally either
    state.record("tpm:x", 10)
    assert state.window("tpm:x") == 10 and state.fallback.window("tpm:x") == 10
    assert state.admit("healthcheck:1", 1, is_limit=False) == (True, 0.0)
    assert state.add("inflight:x", 2) == 2.0
    state.set("cool:x", 42.0, 60)
    assert state.get_many(["cool:x"]) == [42.0]
    state.release("parallel:x", "m")
    warnings = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "refused (503)" in warnings[0], warnings
    assert state.status() == "redis unreachable (calls under a rate limit refused)"


def test_redis_unreachable_under_local_says_limits_are_per_instance(tmp_path, caplog):
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(),
                         "local_state_path": str(tmp_path / "local.sqlite")})
    caplog.set_level(logging.WARNING, logger="gateway.routing.state")
    assert state.outage_limits == "local"
    assert state.window("tpm:x", is_limit=True) == 0  # served locally, never refused
    warnings = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "counted per instance" in warnings[0], warnings


def test_status_does_not_ping_while_redis_is_known_to_be_down(tmp_path):
    """Readiness probes during an outage cost nothing: the state already knows Redis is down."""
    state = build_state({"redis_host": "127.0.0.1", "redis_port": closed_port(),
                         "local_state_path": str(tmp_path / "local.sqlite")})
    assert state.reachable
    state.admit("rpm:x", 3)  # fails over: Redis is known down for RETRY_AFTER seconds
    assert not state.reachable

    def ping():
        raise AssertionError("status() pinged a Redis it knows is down")
    state.client.ping = ping
    for _ in range(3):
        assert state.status() == "redis unreachable (using local state)"


# ---- expiring slots (max_parallel_requests) -------------------------------------------------

def _slots(state):
    assert state.acquire("k", 2, "a", ttl=60, now=1000.0)
    assert state.acquire("k", 2, "b", ttl=60, now=1000.0)
    assert not state.acquire("k", 2, "c", ttl=60, now=1001.0)  # both slots taken
    state.release("k", "a")
    assert state.acquire("k", 2, "c", ttl=60, now=1002.0)
    assert not state.acquire("k", 2, "d", ttl=60, now=1003.0)
    # "b" was never released (its worker died): its slot frees itself when its ttl ends
    assert state.acquire("k", 2, "d", ttl=60, now=1060.5)
    assert state.acquire("other", 1, "a", ttl=60, now=1000.0)  # keys are independent


def test_local_slots_are_exact_and_expire(local):
    _slots(local)


def test_redis_slots_are_exact_and_expire(redis_client, prefix, tmp_path):
    _slots(redis_state(prefix, tmp_path))


def test_a_command_redis_refuses_falls_back_for_that_call_only(redis_client, prefix, tmp_path, caplog):
    """Only a connection failure sets Redis aside (#11 item 9); a refused command (here WRONGTYPE on
    a key that holds a string) is served from local state for that call, and Redis stays in use."""
    state = redis_state(prefix, tmp_path)
    redis_client.set(prefix + "rpm:wrong", "a string")
    with caplog.at_level(logging.WARNING, logger="gateway.routing.state"):
        assert state.admit("rpm:wrong", 10) == (True, 0.0)
    assert state.admit("rpm:fine", 10) == (True, 0.0)
    assert redis_client.zcard(prefix + "rpm:fine") == 1  # went to Redis, not to the fallback
    assert state.fallback.window("rpm:fine") == 0
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
