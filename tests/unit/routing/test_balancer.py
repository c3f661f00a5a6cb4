"""Choosing a deployment: strategies (seeded), order tiers, rpm/tpm limits and cooldown rules.

No network: deployments are real provider objects pointed at a port nobody calls, and the shared
state is a LocalState on a tmp_path file.
"""

import random
import time
from collections import Counter

import pytest

from gateway import errors
from gateway import providers
from gateway.routing.balancer import LATENCY_EXPLORE
from gateway.routing.balancer import Deployment
from gateway.routing.balancer import Group
from gateway.config.settings import DeploymentConfig
from gateway.routing.state import LocalState

PICKS = 3000


def deployment(dep_id, index=0, **params):
    """A real OpenAI-compatible deployment named `dep_id` (model_info.id) with routing params."""
    config = DeploymentConfig(model_name="g", params={"model": "openai/m", "api_base": "http://127.0.0.1:9/v1",
                                                      "api_key": "sk-unit-test", **params},
                              model_info={"id": dep_id}, index=index)
    return Deployment(providers.build(config))


@pytest.fixture
def state(tmp_path):
    return LocalState(str(tmp_path / "state.sqlite"))


@pytest.fixture
def make_group(state):
    def make(*deps, strategy="simple-shuffle", cooldown_time=60.0, allowed_fails=3):
        return Group("g", list(deps), strategy, state, cooldown_time, allowed_fails)
    return make


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(1234)
    yield


def picks(group, n=PICKS):
    return Counter(group.choose().id for _ in range(n))


def upstream_error(status, cls=None, **kw):
    """What a provider raises for an upstream answer with `status`."""
    return errors.from_upstream_status(status, f"upstream said {status}", **kw) if cls is None else cls(
        f"upstream said {status}", upstream_status=status, **kw)


# ---- simple-shuffle -------------------------------------------------------

def test_shuffle_by_weight_two_to_one(make_group):
    group = make_group(deployment("a", weight=2), deployment("b", weight=1))
    counts = picks(group)
    assert counts["a"] + counts["b"] == PICKS
    assert abs(counts["a"] / PICKS - 2 / 3) < 0.04, counts


def test_shuffle_by_rpm_when_no_weight(make_group):
    # rpm high enough that the limit never bites: the split is the rpm ratio 3:1
    group = make_group(deployment("a", rpm=30000), deployment("b", rpm=10000))
    counts = picks(group)
    assert abs(counts["a"] / PICKS - 3 / 4) < 0.04, counts


def test_shuffle_by_tpm_when_no_weight_or_rpm(make_group):
    group = make_group(deployment("a", tpm=1000), deployment("b", tpm=4000))
    counts = picks(group, 2000)
    assert abs(counts["b"] / 2000 - 4 / 5) < 0.04, counts


def test_weight_wins_over_rpm(make_group):
    group = make_group(deployment("a", weight=1, rpm=90000), deployment("b", weight=1, rpm=10000))
    counts = picks(group, 2000)
    assert abs(counts["a"] / 2000 - 1 / 2) < 0.05, counts


def test_shuffle_without_weights_is_uniform(make_group):
    group = make_group(deployment("a"), deployment("b"), deployment("c"))
    counts = picks(group)
    assert all(abs(counts[d] / PICKS - 1 / 3) < 0.04 for d in "abc"), counts


def test_zero_weight_is_never_picked(make_group):
    group = make_group(deployment("a", weight=0), deployment("b", weight=1))
    assert picks(group, 300) == {"b": 300}


# ---- least-busy -------------------------------------------------------------

def test_least_busy_picks_lowest_in_flight(make_group, state):
    group = make_group(deployment("a"), deployment("b"), deployment("c"), strategy="least-busy")
    state.add("inflight:a", 3)
    state.add("inflight:b", 1)
    state.add("inflight:c", 2)
    assert picks(group, 50) == {"b": 50}
    state.add("inflight:b", 5)
    assert picks(group, 50) == {"c": 50}


def test_least_busy_spreads_concurrent_calls_evenly(make_group, state):
    group = make_group(deployment("a"), deployment("b"), deployment("c"), strategy="least-busy")
    chosen = []
    for _ in range(9):  # nine calls in flight at once: none finishes before the next is routed
        d = group.choose()
        group.started(d)
        chosen.append(d)
    assert Counter(d.id for d in chosen) == {"a": 3, "b": 3, "c": 3}
    assert state.get_many(["inflight:a", "inflight:b", "inflight:c"]) == [3.0, 3.0, 3.0]
    for d in chosen:
        group.finished(d, seconds=0.1)
    assert state.get_many(["inflight:a", "inflight:b", "inflight:c"]) == [0.0, 0.0, 0.0]


def test_least_busy_failed_call_is_no_longer_in_flight(make_group, state):
    group = make_group(deployment("a"), deployment("b"), strategy="least-busy")
    d = group.choose()
    group.started(d)
    group.finished(d, error=upstream_error(400))
    assert state.get_many([f"inflight:{d.id}"]) == [0.0]


# ---- usage-based ------------------------------------------------------------

def test_usage_based_picks_lowest_tpm_window(make_group, state):
    group = make_group(deployment("a", tpm=10000), deployment("b", tpm=10000), deployment("c", tpm=10000),
                       strategy="usage-based-routing")
    state.record("tpm:a", 500)
    state.record("tpm:b", 100)
    state.record("tpm:c", 300)
    assert picks(group, 30) == {"b": 30}


def test_usage_based_skips_deployments_at_tpm(make_group, state):
    group = make_group(deployment("a", tpm=1000), deployment("b", tpm=100), deployment("c", tpm=1000),
                       strategy="usage-based-routing")
    state.record("tpm:a", 500)
    state.record("tpm:b", 100)  # lowest usage, but at its limit
    state.record("tpm:c", 300)
    assert picks(group, 30) == {"c": 30}


def test_usage_based_counts_tokens_of_finished_calls(make_group, state):
    group = make_group(deployment("a", tpm=1000), deployment("b", tpm=1000), strategy="usage-based-routing")
    first = group.choose()
    group.started(first)
    group.finished(first, seconds=0.2, tokens=400)
    assert state.window(f"tpm:{first.id}") == 400
    assert {group.choose().id for _ in range(10)} == {"b" if first.id == "a" else "a"}


def test_all_at_tpm_is_429_with_retry_after(make_group, state):
    group = make_group(deployment("a", tpm=100), deployment("b", tpm=100), strategy="usage-based-routing")
    state.record("tpm:a", 100)
    state.record("tpm:b", 150)
    with pytest.raises(errors.RateLimitError) as err:
        group.choose()
    assert err.value.status == 429
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60


# ---- latency-based ------------------------------------------------------------

def test_latency_based_prefers_unmeasured(make_group, state):
    group = make_group(deployment("a"), deployment("b"), strategy="latency-based-routing")
    state.set("latency:a", 0.05, 3600)
    counts = picks(group, 1000)
    # b has never been measured: it gets every call but the exploration share
    assert counts["b"] >= 1000 * (1 - LATENCY_EXPLORE) - 30, counts


def test_latency_based_prefers_lowest_latency_with_bounded_exploration(make_group, state):
    group = make_group(deployment("a"), deployment("b"), deployment("c"), strategy="latency-based-routing")
    state.set("latency:a", 0.5, 3600)
    state.set("latency:b", 0.1, 3600)
    state.set("latency:c", 0.3, 3600)
    counts = picks(group, 2000)
    others = (counts["a"] + counts["c"]) / 2000
    # exploration sends a random order LATENCY_EXPLORE of the time: 2/3 of that goes elsewhere
    assert 0.02 < others < LATENCY_EXPLORE + 0.03, counts
    assert counts["a"] > 0 and counts["c"] > 0  # the slow ones are still measured now and then


def test_latency_follows_slow_responses(make_group, state):
    group = make_group(deployment("a"), deployment("b"), strategy="latency-based-routing")
    a, b = group.deployments
    group.finished(a, seconds=0.1)
    group.finished(b, seconds=0.1)
    for _ in range(3):
        group.finished(a, seconds=2.0)  # a turns slow
    assert state.get_many(["latency:a"])[0] > 1.0
    assert state.get_many(["latency:b"])[0] == pytest.approx(0.1)
    counts = picks(group, 500)
    assert counts["b"] > 500 * (1 - LATENCY_EXPLORE) - 30, counts


# ---- order tiers --------------------------------------------------------------

def test_lower_order_first(make_group):
    group = make_group(deployment("a", order=1), deployment("b", order=1), deployment("c", order=2),
                       deployment("d"))
    counts = picks(group, 300)
    assert set(counts) == {"a", "b"}, counts


def test_next_order_only_when_all_lower_are_cooling(make_group):
    group = make_group(deployment("a", order=1), deployment("b", order=1), deployment("c", order=2))
    a, b, c = group.deployments
    group.cool_down(a, "test")
    assert set(picks(group, 100)) == {"b"}
    group.cool_down(b, "test")
    assert set(picks(group, 100)) == {"c"}


def test_next_order_only_when_all_lower_are_at_limit(make_group):
    group = make_group(deployment("a", order=1, rpm=2), deployment("b", order=2, rpm=1000))
    assert [group.choose().id for _ in range(5)] == ["a", "a", "b", "b", "b"]


def test_order_tiers_with_weights_inside_a_tier(make_group):
    group = make_group(deployment("a", order=1, weight=3), deployment("b", order=1, weight=1),
                       deployment("c", order=2, weight=100))
    counts = picks(group, 2000)
    assert "c" not in counts
    assert abs(counts["a"] / 2000 - 3 / 4) < 0.04, counts


# ---- rpm limits -----------------------------------------------------------------

def test_rpm_limit_admits_exactly_n(make_group):
    group = make_group(deployment("a", rpm=5))
    assert [group.choose().id for _ in range(5)] == ["a"] * 5
    with pytest.raises(errors.RateLimitError) as err:
        group.choose()
    assert err.value.status == 429
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60


def test_rpm_sliding_window_exact(state):
    t0 = 1_000_000.0
    for i in range(3):
        assert state.admit("rpm:x", 3, now=t0 + i) == (True, 0.0)
    allowed, wait = state.admit("rpm:x", 3, now=t0 + 10)
    assert not allowed
    assert wait == pytest.approx(50.0)  # the oldest call (t0) leaves the window at t0 + 60
    assert not state.admit("rpm:x", 3, now=t0 + 59.9)[0]
    assert state.admit("rpm:x", 3, now=t0 + 60.0) == (True, 0.0)  # t0 left the window
    assert not state.admit("rpm:x", 3, now=t0 + 60.5)[0]  # t0+1, t0+2, t0+60 are in it
    assert state.admit("rpm:x", 3, now=t0 + 61.0)[0]
    # refused calls are not counted
    assert state.window("rpm:x", now=t0 + 61.0) == 3


def test_all_at_rpm_is_429_with_soonest_retry_after(make_group, state):
    group = make_group(deployment("a", rpm=1), deployment("b", rpm=1))
    now = time.time()
    state.admit("rpm:a", 1, now=now - 50)  # a frees up in ~10 s, b in ~60 s
    state.admit("rpm:b", 1, now=now)
    with pytest.raises(errors.RateLimitError) as err:
        group.choose()
    assert 8 <= int(err.value.headers["Retry-After"]) <= 11


# ---- cooldowns ------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 401, 404])
def test_cooldown_at_once(make_group, status):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=3)
    a, b = group.deployments
    group.finished(a, error=upstream_error(status))
    assert set(group.cooling()) == {"a"}
    assert set(picks(group, 50)) == {"b"}


def test_timeout_cools_down_only_after_allowed_fails(make_group):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=1)
    a, _ = group.deployments
    group.finished(a, error=errors.UpstreamTimeoutError("no answer"))
    assert group.cooling() == {}
    group.finished(a, error=errors.UpstreamTimeoutError("no answer"))
    assert set(group.cooling()) == {"a"}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_cools_down_after_allowed_fails_in_a_minute(make_group, status):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=2)
    a, _ = group.deployments
    for _ in range(2):
        group.finished(a, error=upstream_error(status))
        assert group.cooling() == {}, "allowed_fails failures are allowed"
    group.finished(a, error=upstream_error(status))
    assert set(group.cooling()) == {"a"}


def test_allowed_fails_zero_cools_on_first_5xx(make_group):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=0)
    a, _ = group.deployments
    group.finished(a, error=upstream_error(500))
    assert set(group.cooling()) == {"a"}


def test_old_failures_leave_the_minute(make_group, state):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=1)
    state.record("fails:a", 1, now=time.time() - 61)  # a failure from over a minute ago
    group.finished(group.deployments[0], error=upstream_error(500))
    assert group.cooling() == {}


@pytest.mark.parametrize("status", [400, 403, 413, 422])
def test_client_errors_never_cool_down(make_group, state, status):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=0)
    a, _ = group.deployments
    for _ in range(3):
        group.finished(a, error=upstream_error(status))
    assert group.cooling() == {}
    assert state.window("fails:a") == 0


def test_context_window_error_never_cools_down(make_group):
    group = make_group(deployment("a"), deployment("b"), allowed_fails=0)
    group.finished(group.deployments[0], error=upstream_error(400, code="context_length_exceeded"))
    assert group.cooling() == {}


def test_lone_deployment_never_cools(make_group, state):
    group = make_group(deployment("a"), allowed_fails=0)
    for status in (429, 401, 404, 500):
        group.finished(group.deployments[0], error=upstream_error(status))
    assert group.cooling() == {}
    assert state.get_many(["cool:a"]) == [None]
    assert group.choose().id == "a"


def test_cooldown_seen_by_another_worker(state):
    """The cooldown lives in shared state: a second Group (another worker) skips it too."""
    mine = Group("g", [deployment("a"), deployment("b")], "simple-shuffle", state, 60.0, 0)
    theirs = Group("g", [deployment("a"), deployment("b")], "simple-shuffle", state, 60.0, 0)
    mine.finished(mine.deployments[0], error=upstream_error(429))
    assert set(theirs.cooling()) == {"a"}
    assert set(picks(theirs, 30)) == {"b"}


def test_cooldown_expires(make_group):
    group = make_group(deployment("a"), deployment("b"), cooldown_time=0.3)
    a, _ = group.deployments
    group.finished(a, error=upstream_error(429))
    assert set(picks(group, 20)) == {"b"}
    time.sleep(0.5)
    assert group.cooling() == {}
    assert set(picks(group, 100)) == {"a", "b"}


def test_all_cooling_is_503_with_retry_after(make_group):
    group = make_group(deployment("a"), deployment("b"), cooldown_time=30)
    for d in group.deployments:
        group.finished(d, error=upstream_error(429))
    with pytest.raises(errors.ServiceUnavailableError) as err:
        group.choose()
    assert err.value.status == 503
    assert err.value.code == "deployments_cooling_down"
    assert 25 <= int(err.value.headers["Retry-After"]) <= 30


def test_retry_excludes_the_deployment_just_tried(make_group):
    group = make_group(deployment("a"), deployment("b"), deployment("c"))
    for _ in range(50):
        assert group.choose(exclude=["a", "b"]).id == "c"
    # when every deployment was tried, any may be tried again
    assert group.choose(exclude=["a", "b", "c"]).id in "abc"


# ---- state is touched only when a feature needs it ---------------------------------

class CountingState:
    """Wraps a state backend and counts every call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = Counter()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)
        return counted


def test_plain_group_does_no_state_work(state):
    counting = CountingState(state)
    group = Group("g", [deployment("a")], "simple-shuffle", counting, 60.0, 3)
    for _ in range(100):
        d = group.choose()
        group.started(d)
        group.finished(d, seconds=0.01, tokens=10)
        group.finished(d, error=upstream_error(500))
    assert counting.calls == {}


def test_shuffle_pair_reads_cooldowns_at_most_once_a_second(state):
    counting = CountingState(state)
    group = Group("g", [deployment("a"), deployment("b")], "simple-shuffle", counting, 60.0, 3)
    started = time.monotonic()
    for _ in range(200):
        d = group.choose()
        group.started(d)
        group.finished(d, seconds=0.01, tokens=10)
    seconds = time.monotonic() - started
    assert set(counting.calls) <= {"get_many"}
    assert counting.calls["get_many"] <= seconds + 2


# ---- limits while Redis is down under redis_outage_limits: refuse --------------------------------

class RefusingState(LocalState):
    """Redis down under `refuse`: every limit's check raises, the rest is local."""

    def admit(self, key, limit, amount=1.0, now=None, is_limit=True):
        if is_limit:
            raise errors.LimitStateUnavailableError("down", headers={"Retry-After": "5"})
        return super().admit(key, limit, amount, now)

    def window(self, key, now=None, is_limit=False):
        if is_limit:
            raise errors.LimitStateUnavailableError("down", headers={"Retry-After": "5"})
        return super().window(key, now)


def test_a_deployment_without_limits_serves_while_the_limited_ones_cannot_be_checked(tmp_path):
    state = RefusingState(str(tmp_path / "state.sqlite"))
    group = Group("g", [deployment("rpm", rpm=10), deployment("tpm", 1, tpm=1000), deployment("free", 2)],
                  "simple-shuffle", state, 60.0, 3)
    assert {group.choose().id for _ in range(50)} == {"free"}


def test_only_limited_deployments_while_their_limits_cannot_be_checked_is_a_503(tmp_path):
    state = RefusingState(str(tmp_path / "state.sqlite"))
    group = Group("g", [deployment("rpm", rpm=10), deployment("tpm", 1, tpm=1000)], "simple-shuffle", state, 60.0, 3)
    with pytest.raises(errors.LimitStateUnavailableError) as info:
        group.choose()
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "5"
