"""The rpm / tpm / parallel limits of the levels above a key (its user, team, organization) count
every call of the key, beside the key's own, in the shared state (local and Redis); a call refused
at one level takes back what the levels before it counted (gateway/access/rules.py)."""

import types

import pytest

from gateway import errors
from gateway.access.keys import KeyRules
from gateway.access.keys import Level
from gateway.access.rules import apply_key_rules
from gateway.routing.state import LocalState
from tests.unit.routing.test_state import prefix  # noqa: F401  (fixtures shared with the state tests)
from tests.unit.routing.test_state import redis_client  # noqa: F401
from tests.unit.routing.test_state import redis_state

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture(params=["local", "redis"])
def state(request, tmp_path):
    if request.param == "local":
        return LocalState(str(tmp_path / "state.sqlite"))
    return redis_state(request.getfixturevalue("prefix"), tmp_path)


def _router(state):
    return types.SimpleNamespace(state=state, allowed_groups=lambda models: None)


def _meter(n, rules):
    return types.SimpleNamespace(request_id=f"req-{n}", requested="m", tpm_reserved=0, tpm_windows=(),
                                 levels=rules.levels, end_user=None)


def _rules(name, *levels, **own):
    return KeyRules(f"hash-{name}", None, None, {}, None, False, None, 0.0, own.get("rpm"),
                    own.get("parallel"), own.get("tpm"), limits_id=f"key-{name}", levels=levels)


def _call(state, rules, n):
    meter = _meter(n, rules)
    release, _ = apply_key_rules(rules, dict(BODY), meter, _router(state), 60)
    return release, meter


def test_a_teams_rpm_counts_the_calls_of_all_its_keys(state):
    team = Level("team", "t-rpm", rpm_limit=3)
    a, b = _rules("a", team), _rules("b", team)
    for n, rules in enumerate((a, b, a)):
        _call(state, rules, n)
    with pytest.raises(errors.RateLimitError, match="team `t-rpm`'s limit of 3 requests per minute"):
        _call(state, b, 9)


def test_a_call_refused_by_a_level_takes_back_what_the_key_and_lower_levels_counted(state):
    user = Level("user", "u-undo", rpm_limit=5, tpm_limit=1000)
    team = Level("team", "t-undo", rpm_limit=0)  # nothing allowed
    rules = _rules("undo", user, team, rpm=5, tpm=1000)
    for n in range(3):
        with pytest.raises(errors.RateLimitError, match="team `t-undo`"):
            _call(state, rules, n)
    for window in ("key-rpm:key-undo", "user-rpm:u-undo", "key-tpm:key-undo", "user-tpm:u-undo"):
        assert state.window(window) == 0, window


def test_parallel_slots_are_taken_at_every_level_and_given_back_once(state):
    org = Level("organization", "o-par", max_parallel_requests=1)
    first, second = _rules("p1", org, parallel=5), _rules("p2", org, parallel=5)
    release, _ = _call(state, first, 1)
    with pytest.raises(errors.RateLimitError, match="organization `o-par`'s limit of 1 parallel"):
        _call(state, second, 2)
    release()
    release()  # a stream closes through two paths: counted once
    again, _ = _call(state, second, 3)
    assert again is not None
    again()


def test_tpm_windows_of_every_level_are_held_and_named_on_the_meter(state):
    team = Level("team", "t-tpm", tpm_limit=10_000)
    _, meter = _call(state, _rules("tpm", team, tpm=10_000), 1)
    assert meter.tpm_windows == ("key-tpm:key-tpm", "team-tpm:t-tpm") and meter.tpm_reserved >= 10
    assert state.window("team-tpm:t-tpm") == meter.tpm_reserved


def test_every_tpm_window_is_settled_to_the_calls_real_usage(state):
    from gateway.spend.meter import Meter
    from gateway.spend.meter import SpendTracker
    tracker = SpendTracker(None, state, 60)
    team = Level("team", "t-settle", tpm_limit=10_000)
    rules = _rules("settle", team, tpm=10_000)
    meter = Meter(tracker, "req-settle", rules, "chat", dict(BODY), False)
    apply_key_rules(rules, meter.body, meter, _router(state), 60)
    meter.settle(None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    assert state.window("key-tpm:key-settle") == 7 and state.window("team-tpm:t-settle") == 7


def test_a_refused_calls_windows_are_given_back_once_when_its_meter_is_abandoned(state):
    from gateway.spend.meter import Meter
    from gateway.spend.meter import SpendTracker
    tracker = SpendTracker(None, state, 60)
    team = Level("team", "t-once", max_parallel_requests=0)  # refuses after the tpm windows counted
    rules = _rules("once", Level("user", "u-once", tpm_limit=10_000), team, tpm=10_000)
    meter = Meter(tracker, "req-once", rules, "chat", dict(BODY), False)
    with pytest.raises(errors.RateLimitError) as refused:
        apply_key_rules(rules, meter.body, meter, _router(state), 60)
    meter.abandon(refused.value)  # as the pipeline does with a refused call
    assert state.window("key-tpm:key-once") == 0 and state.window("user-tpm:u-once") == 0
