"""rpm limits hold exactly under load: across gunicorn workers (local state), across gateway
instances (the real Redis), and calls keep succeeding while Redis is down.

The shared Redis at 127.0.0.1:6379 is required when CI=true; elsewhere its test is skipped.
Each run uses fresh deployment ids (model_info.id), so keys of earlier runs never interfere.
"""

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.routing.state import RedisState
from tests.integration.redis_server import RedisServer

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]
CALLS, RPM = 20, 6


def limited_config(fake, dep_id, rpm=RPM, router_settings=None):
    base = {"api_base": fake.url + "/v1", "api_key": fake.api_key}
    return {"model_list": [{"model_name": "limited",
                            "litellm_params": {"model": "openai/gpt-3.5-turbo", "rpm": rpm, **base},
                            "model_info": {"id": dep_id}},
                           # a second limited group, to open the state file before the load
                           {"model_name": "warm-up", "litellm_params": {"model": "openai/gpt-4o", "rpm": 1000, **base},
                            "model_info": {"id": f"{dep_id}-warm-up"}}],
            "router_settings": dict(router_settings or {})}


def warm_up(url):
    """One call that touches the router state, so the load below measures limits, not start-up.
    (A fresh state file opened by two workers at once is test_state's
    test_first_open_waits_for_another_workers_lock.)"""
    resp = requests.post(url + "/chat/completions", json={"model": "warm-up", "messages": HELLO}, timeout=30)
    assert resp.status_code == 200, resp.text


def call(url):
    """One chat call on its own connection: (status, headers)."""
    with requests.Session() as session:
        resp = session.post(url + "/chat/completions", json={"model": "limited", "messages": HELLO}, timeout=60)
        return resp.status_code, resp.headers, resp.text


def fire(urls, n=CALLS):
    """n calls at once, spread round-robin over the gateways at `urls`."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, [urls[i % len(urls)] for i in range(n)]))


def assert_exactly_rpm_admitted(results, fake):
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * RPM + [429] * (CALLS - RPM), [(s, t[:200]) for s, _, t in results]
    assert fake.count("gpt-3.5-turbo") == RPM
    for status, headers, text in results:
        if status == 429:
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert '"rate_limit_error"' in text or '"rate_limit_exceeded"' in text


@pytest.fixture
def shared_redis():
    """The real Redis everyone shares; CI must have it."""
    import redis
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs Redis at 127.0.0.1:6379: {exc}")
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({type(exc).__name__})")
    yield client
    client.close()


@pytest.fixture
def private_redis():
    """A redis-server of this test's own, to stop and restart; CI must have the binary."""
    try:
        server = RedisServer()
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with server:
        yield server


def test_rpm_exact_across_two_workers(start_gateway, fake_openai):
    gw = start_gateway(limited_config(fake_openai, f"rpm-workers-{uuid.uuid4().hex[:8]}"),
                       args=["--num_workers", "2"])
    warm_up(gw.url)
    assert_exactly_rpm_admitted(fire([gw.url]), fake_openai)


def test_rpm_exact_across_two_instances_sharing_redis(start_gateway, fake_openai, shared_redis):
    dep_id = f"rpm-redis-{uuid.uuid4().hex}"
    config = limited_config(fake_openai, dep_id, router_settings={"redis_host": "127.0.0.1", "redis_port": 6379})
    try:
        first, second = start_gateway(config), start_gateway(config)
        for gw in (first, second):
            assert requests.get(gw.url + "/health/readiness", timeout=10).json()["router_state"] == "redis"
        assert_exactly_rpm_admitted(fire([first.url, second.url]), fake_openai)
        assert shared_redis.zcard(f"gateway:rpm:{dep_id}") == RPM
    finally:
        shared_redis.delete(f"gateway:rpm:{dep_id}")


# ---- Redis going away ----------------------------------------------------------------------

def least_busy_config(fake, port, tag):
    base = {"api_base": fake.url + "/v1", "api_key": fake.api_key}
    return {"model_list": [
        {"model_name": "busy", "litellm_params": {"model": "openai/gpt-3.5-turbo", **base},
         "model_info": {"id": f"{tag}-a"}},
        {"model_name": "busy", "litellm_params": {"model": "openai/gpt-4o", **base},
         "model_info": {"id": f"{tag}-b"}}],
        "router_settings": {"routing_strategy": "least-busy", "redis_host": "127.0.0.1", "redis_port": port}}


def timed_calls(url, n=3):
    """Make n calls; returns their durations; every one must succeed."""
    durations = []
    for _ in range(n):
        started = time.monotonic()
        resp = requests.post(url + "/chat/completions", json={"model": "busy", "messages": HELLO}, timeout=60)
        durations.append(time.monotonic() - started)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "Hello from fake upstream: hello there"
    return durations


def readiness(url):
    started = time.monotonic()
    resp = requests.get(url + "/health/readiness", timeout=60)
    assert resp.status_code == 200
    return resp.json()["router_state"], time.monotonic() - started


def test_redis_stopped_mid_test_calls_keep_succeeding(start_gateway, fake_openai, private_redis):
    server = private_redis
    gw = start_gateway(least_busy_config(fake_openai, server.port, f"outage-{uuid.uuid4().hex[:8]}"))
    timed_calls(gw.url)
    assert readiness(gw.url)[0] == "redis"
    server.stop()
    timed_calls(gw.url)
    assert readiness(gw.url)[0] == "redis unreachable (using local state)"
    log = gw.log()
    assert log.count("Redis unreachable") == 1, log  # said once, not once per call
    server.start()  # same port, empty
    timed_calls(gw.url)
    # A worker tries Redis again RETRY_AFTER s after its last failure; until then it says (truly) that
    # it uses local state, without a PING per probe.
    deadline = time.monotonic() + RedisState.RETRY_AFTER + 5
    while (state := readiness(gw.url)[0]) != "redis":
        assert state == "redis unreachable (using local state)"
        assert time.monotonic() < deadline, "readiness never said Redis again"
        time.sleep(0.1)


def test_redis_down_does_not_stall_calls(start_gateway, fake_openai, private_redis):
    """Socket timeouts are 0.25 s: an outage must not add seconds to calls or to readiness."""
    server = private_redis
    gw = start_gateway(least_busy_config(fake_openai, server.port, f"stall-{uuid.uuid4().hex[:8]}"))
    timed_calls(gw.url, 2)
    server.stop()
    durations = timed_calls(gw.url)
    state, ready_seconds = readiness(gw.url)
    assert state == "redis unreachable (using local state)"
    assert max(durations) < 2.0, f"calls took {durations} s while Redis was down"
    assert ready_seconds < 2.0, f"readiness took {ready_seconds:.1f} s while Redis was down"
