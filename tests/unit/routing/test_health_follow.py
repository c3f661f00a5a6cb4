"""Another instance's background health check, followed from the database (no Redis): its outcome
is kept here, a recent failure cools the deployment down, an old one does not, and what this
instance knows already is left alone."""

import time

from gateway.config.settings import from_dict
from gateway.routing import health
from gateway.routing.router import Router


def _router(tmp_path):
    entries = [{"model_name": "g", "litellm_params": {"model": f"demo/echo-{i}"}} for i in range(3)]
    return Router(from_dict({"model_list": entries, "router_settings": {
        "local_state_path": str(tmp_path / "state.sqlite"), "cooldown_time": 30}}), None)


def test_a_followed_check_is_kept_and_only_a_recent_failure_cools_down(tmp_path):
    router = _router(tmp_path)
    ok, failed, stale = router.deployments()
    now = time.time()
    health.follow(router, {ok.id: [now, None], failed.id: [-now, "upstream answered 500"],
                           stale.id: [-(now - 60), "upstream answered 500"], "gone": [now, None]})
    checks = health.last_checks(router, [ok, failed, stale])
    assert {k: v["healthy"] for k, v in checks.items()} == {ok.id: True, failed.id: False, stale.id: False}
    assert set(router.groups["g"].cooling()) == {failed.id}  # the 60 s old failure is past its cooldown


def test_what_this_instance_knows_already_is_left_alone(tmp_path):
    router = _router(tmp_path)
    deployment = router.deployments()[0]
    now = time.time()
    router.state.set(health.LAST_CHECK + deployment.id, now, 60)  # its own, newer check: healthy
    health.follow(router, {deployment.id: [-(now - 1), "upstream answered 500"]})
    assert health.last_checks(router, [deployment])[deployment.id]["healthy"] is True
    assert router.groups["g"].cooling() == {}
