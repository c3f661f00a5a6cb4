"""Issue #11 item 20: a limit of 0 allows nothing, in the shared state (local and Redis) and for a
deployment's rpm / tpm; only an absent limit (None) means no limit."""

import pytest

from gateway import errors
from gateway.routing.balancer import Group
from gateway.routing.state import LocalState
from tests.unit.routing.test_balancer import deployment
from tests.unit.routing.test_state import prefix  # noqa: F401  (fixtures shared with the state tests)
from tests.unit.routing.test_state import redis_client  # noqa: F401
from tests.unit.routing.test_state import redis_state


def _refuses_everything(state):
    for amount in (1.0, 0.5, 1000.0):
        allowed, wait = state.admit("key-rpm:zero", 0, amount)
        assert not allowed and 0 < wait <= 60
    assert state.window("key-rpm:zero") == 0  # refused calls are not counted
    assert not state.acquire("key-parallel:zero", 0, "member-1", ttl=60)
    assert not state.acquire("key-parallel:zero", 0, "member-2", ttl=60)
    assert state.acquire("key-parallel:other", 1, "member-1", ttl=60)  # 1 still allows one


def test_local_state_refuses_everything_at_limit_zero(tmp_path):
    _refuses_everything(LocalState(str(tmp_path / "state.sqlite")))


def test_redis_state_refuses_everything_at_limit_zero(redis_client, prefix, tmp_path):  # noqa: F811
    state = redis_state(prefix, tmp_path)
    _refuses_everything(state)
    assert redis_client.exists(prefix + "key-parallel:other")  # the state really was Redis


@pytest.fixture
def state(tmp_path):
    return LocalState(str(tmp_path / "state.sqlite"))


@pytest.mark.parametrize("limit", ["rpm", "tpm"])
def test_a_deployment_with_a_limit_of_zero_takes_no_call(state, limit):
    group = Group("g", [deployment("zero", **{limit: 0})], "simple-shuffle", state, 60.0, 3)
    assert group.uses_limits
    with pytest.raises(errors.RateLimitError):
        group.choose()


@pytest.mark.parametrize("limit", ["rpm", "tpm"])
def test_calls_go_to_the_deployment_whose_limit_is_not_zero(state, limit):
    group = Group("g", [deployment("zero", **{limit: 0}), deployment("open", index=1)], "simple-shuffle",
                  state, 60.0, 3)
    assert {group.choose().id for _ in range(50)} == {"open"}


def test_no_limit_still_means_no_limit(state):
    group = Group("g", [deployment("open")], "simple-shuffle", state, 60.0, 3)
    assert not group.uses_limits
    assert {group.choose().id for _ in range(50)} == {"open"}
