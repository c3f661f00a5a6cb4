"""Hard budgets at every level, raced (issue #13): 50 concurrent calls from keys of two users of one
team (and of two teams of one organization, and of two keys naming one end user) against a budget
that fits 10, on two gateway instances sharing PostgreSQL and Redis. At most 10 are admitted, the
rest refused with LiteLLM's budget error naming the level, and each level's spend equals the sum of
its ledger rows once everything has settled."""

import time

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import select

from gateway.access import keys as key_module
from gateway.storage.models import SpendRow
from tests.integration.test_budget import EPSILON
from tests.integration.test_budget import MASTER
from tests.integration.test_budget import RACE_CALLS
from tests.integration.test_budget import RACE_FITS
from tests.integration.test_budget import chat_body
from tests.integration.test_budget import fire
from tests.integration.test_budget import launch  # noqa: F401  (fixture)
from tests.integration.test_budget import outcome
from tests.integration.test_budget import real_cost
from tests.integration.test_budget import redis_router
from tests.integration.test_budget import upstream  # noqa: F401  (fixture)
from tests.integration.test_budget import worst_case
from tests.integration.test_limits import shared_redis  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def _admin(cluster, path, body):
    resp = requests.post(cluster.urls[0] + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _get(cluster, path, **params):
    resp = requests.get(cluster.urls[0] + path, params=params, timeout=30,
                        headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _ledger(cluster, column, value):
    """(rows, their summed cost) of the ledger rows naming `value` in `column`."""
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            col = getattr(SpendRow, column)
            return tuple(connection.execute(select(func.count(), func.coalesce(func.sum(SpendRow.cost), 0.0))
                                            .where(col == value)).one())
    finally:
        engine.dispose()


def _settled(read, timeout=20):
    """read() -> (spend, reserved) once nothing is reserved any more."""
    deadline = time.monotonic() + timeout
    while True:
        spend, reserved = read()
        if abs(reserved) < EPSILON or time.monotonic() > deadline:
            return spend, reserved
        time.sleep(0.1)


def _assert_level_spend_is_its_rows(cluster, path, params, column, admitted, nested=None):
    """Once settled, the level's spend (from its info route) equals its ledger rows: one per
    admitted call, each at the real cost."""
    def read():
        info = _get(cluster, path, **params)
        info = info[nested] if nested else info
        return info["spend"], info.get("reserved", 0.0)
    spend, _ = _settled(read)
    rows, cost = _ledger(cluster, column, next(iter(params.values())))
    assert rows == len(admitted) and spend == pytest.approx(cost) == pytest.approx(len(admitted) * real_cost())
    return spend


@pytest.fixture
def cluster(launch, upstream, shared_redis):  # noqa: F811
    return launch("postgresql", instances=2, general={"budget_mode": "strict"}, router_settings=redis_router())


def _race_concurrently(cluster, keys, body):
    """All the calls of all the keys at once."""
    import asyncio

    import openai

    from tests.integration.test_budget import _call

    async def run():
        clients = [openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)
                   for key in keys for url in cluster.urls]
        try:
            return await asyncio.gather(*(_call(clients[i % len(clients)], body) for i in range(RACE_CALLS)))
        finally:
            for client in clients:
                await client.close()
    return asyncio.run(run())


def _check_race(answers, whose, fake_openai):
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert 1 <= len(admitted) <= RACE_FITS, outcome(answers)
    assert all((a.status, a.code) == (429, "insufficient_quota") for a in refused), outcome(answers)
    assert all(a.message.startswith(f"Budget has been exceeded! {whose} budget") for a in refused), \
        refused[0].message
    assert fake_openai.count("slow") == len(admitted)
    return admitted


def test_a_team_budget_holds_across_its_users_keys_and_two_instances(cluster, fake_openai):
    budget = (RACE_FITS + 0.5) * worst_case()
    _admin(cluster, "/team/new", {"team_id": "race-team", "max_budget": budget})
    keys = []
    for user in ("race-u1", "race-u2"):
        _admin(cluster, "/user/new", {"user_id": user, "teams": ["race-team"], "auto_create_key": False})
        keys.append(_admin(cluster, "/key/generate", {"team_id": "race-team", "user_id": user})["key"])
    answers = _race_concurrently(cluster, keys, chat_body("priced-slow"))
    admitted = _check_race(answers, "Team `race-team`", fake_openai)

    spend = _assert_level_spend_is_its_rows(cluster, "/team/info", {"team_id": "race-team"}, "team_id",
                                            admitted, nested="team_info")
    assert spend <= budget
    for user in ("race-u1", "race-u2"):  # the users' spend is theirs: it adds up to the team's
        assert _get(cluster, "/user/info", user_id=user)["user_info"]["spend"] == pytest.approx(
            _ledger(cluster, "user_id", user)[1])


def test_an_organization_budget_holds_across_two_teams(cluster, fake_openai):
    budget = (RACE_FITS + 0.5) * worst_case()
    _admin(cluster, "/organization/new", {"organization_id": "race-org", "organization_alias": "race",
                                          "max_budget": budget})
    keys = []
    for team in ("race-org-t1", "race-org-t2"):
        _admin(cluster, "/team/new", {"team_id": team, "organization_id": "race-org"})
        keys.append(_admin(cluster, "/key/generate", {"team_id": team})["key"])
    answers = _race_concurrently(cluster, keys, chat_body("priced-slow"))
    admitted = _check_race(answers, "Organization `race-org`", fake_openai)

    _assert_level_spend_is_its_rows(cluster, "/organization/info", {"organization_id": "race-org"},
                                    "organization_id", admitted)


def test_an_end_user_budget_holds_across_two_keys(cluster, fake_openai):
    budget = (RACE_FITS + 0.5) * worst_case()
    _admin(cluster, "/customer/new", {"user_id": "race-end-user", "max_budget": budget})
    keys = [_admin(cluster, "/key/generate", {})["key"] for _ in range(2)]
    answers = _race_concurrently(cluster, keys, {**chat_body("priced-slow"), "user": "race-end-user"})
    admitted = _check_race(answers, "End user `race-end-user`", fake_openai)

    _assert_level_spend_is_its_rows(cluster, "/customer/info", {"end_user_id": "race-end-user"}, "end_user",
                                    admitted)


def test_a_blocked_end_user_is_refused_and_unblocked_served(cluster):
    key = _admin(cluster, "/key/generate", {})["key"]
    _admin(cluster, "/customer/block", {"user_ids": ["blocked-end-user"]})
    body = {**chat_body("priced"), "user": "blocked-end-user"}
    refused = fire(cluster.urls, key, [body, body])
    assert [(a.status, a.code) for a in refused] == [(403, "end_user_blocked")] * 2
    _admin(cluster, "/customer/unblock", {"user_ids": ["blocked-end-user"]})
    # Every worker of both instances learns of the change through the shared change counter,
    # checked at most every REMOTE_CHECK_SECONDS.
    time.sleep(key_module.REMOTE_CHECK_SECONDS + 0.2)
    served = fire(cluster.urls, key, [body] * 8)
    assert [a.status for a in served] == [200] * 8, outcome(served)


def test_a_team_budget_period_starts_over_once_across_instances_and_loses_no_spend(cluster, fake_openai):
    """Calls on both instances when a team's period ends: the period starts over exactly once (a
    second reset would erase spend of the new period, none would keep the old one's) and the new
    period holds the cost of every call made in it."""
    from datetime import datetime

    from tests.integration.test_budget import BUDGET_PERIOD
    from tests.integration.test_budget import parse_time
    _admin(cluster, "/team/new", {"team_id": "reset-team", "max_budget": 1000 * worst_case(),
                                  "budget_duration": BUDGET_PERIOD})
    keys = [_admin(cluster, "/key/generate", {"team_id": "reset-team"})["key"] for _ in range(2)]

    def team():
        info = _get(cluster, "/team/info", team_id="reset-team")["team_info"]
        return info["spend"], info["reserved"]
    period_ends = parse_time(_get(cluster, "/team/info", team_id="reset-team")["team_info"]["budget_reset_at"])
    before = [a for key in keys for a in fire(cluster.urls, key, [chat_body("priced")] * 2)]
    assert [a.status for a in before] == [200] * 4, outcome(before)
    assert datetime.now(period_ends.tzinfo) < period_ends, "too slow: the period ended during the first calls"
    assert _settled(team)[0] == pytest.approx(4 * real_cost())

    time.sleep(max(0.0, (period_ends - datetime.now(period_ends.tzinfo)).total_seconds()) + 0.2)
    after = [a for key in keys for a in fire(cluster.urls, key, [chat_body("priced")] * 10)]
    assert [a.status for a in after] == [200] * 20, outcome(after)
    spend, reserved = _settled(team)
    info = _get(cluster, "/team/info", team_id="reset-team")["team_info"]
    new_end = parse_time(info["budget_reset_at"])
    assert datetime.now(new_end.tzinfo) < new_end, "too slow: the new period ended during the test"
    assert spend == pytest.approx(20 * real_cost())  # the old period's 4 calls are gone, none of the new 20
    assert reserved == pytest.approx(0.0, abs=EPSILON)
    assert _ledger(cluster, "team_id", "reset-team")[0] == 24  # every row is kept
