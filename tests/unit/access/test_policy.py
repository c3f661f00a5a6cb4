"""gateway.access.policy on SQLite and on the real PostgreSQL (the `db` fixture of test_keys): the
scope a caller gets from its role and team memberships, and the field-level rules of key writes."""

import pytest

from gateway import errors
from gateway.access import policy
from gateway.access.auth import Caller
from gateway.access.auth import ROUTE_POLICY
from gateway.access.hierarchy import Hierarchy
from gateway.access.keys import KeyService

from tests.unit.access.test_keys import db  # noqa: F401  (fixtures: sqlite and postgresql)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401


@pytest.fixture
def keys(db):  # noqa: F811
    return KeyService(db)


@pytest.fixture
def world(keys):
    """org (gpt-4, gpt-3.5-turbo; tpm 5000) > team-a (budget 10, rpm 100): ann admin, alice member;
    team-b: bob member; ivan (budget 5, gpt-3.5-turbo only) in no team."""
    h = Hierarchy(keys)
    h.new_organization({"organization_id": "org", "models": ["gpt-4", "gpt-3.5-turbo"], "tpm_limit": 5000})
    h.new_team({"team_id": "team-a", "organization_id": "org", "max_budget": 10, "rpm_limit": 100,
                "members_with_roles": [{"role": "admin", "user_id": "ann"}, {"role": "user", "user_id": "alice"}]})
    h.new_team({"team_id": "team-b", "members_with_roles": [{"role": "user", "user_id": "bob"}]})
    h.new_user({"user_id": "ivan", "max_budget": 5, "models": ["gpt-3.5-turbo"], "auto_create_key": False})
    h.new_user({"user_id": "vera", "user_role": "internal_user_viewer", "auto_create_key": False})
    h.member_add({"team_id": "team-a", "member": {"role": "admin", "user_id": "vera"}})
    return {name: Caller("key", keys.lookup(keys.generate({"user_id": name})["key"]))
            for name in ("ann", "alice", "bob", "ivan", "vera")}


def test_the_table_covers_the_scoped_routes_and_only_proxy_admins_enter_every_one():
    scoped = {e for e, p in ROUTE_POLICY.items() if p in ("scoped", "self")}
    assert scoped == set(policy.ACCESS)
    for endpoint, grant in policy.ACCESS.items():
        assert policy.may_enter(endpoint, "proxy_admin")
        assert not policy.may_enter(endpoint, None)
        assert policy.may_enter(endpoint, "proxy_admin_viewer") == (not grant.write)
        if grant.write:
            assert not policy.may_enter(endpoint, "internal_user_viewer")


def test_scopes_come_from_the_role_and_the_team_memberships(keys, world):
    db = keys.db
    ann = policy.scope("keys.update", world["ann"], db)
    assert ann.own == "ann" and ann.admin_teams == {"team-a"} and not ann.all
    alice = policy.scope("keys.generate", world["alice"], db)
    assert alice.admin_teams == frozenset() and alice.member_teams == {"team-a"}
    assert policy.scope("teams.update", world["alice"], db).admin_teams == frozenset()
    assert policy.scope("teams.info", world["bob"], db).sees_team("team-b")
    assert not policy.scope("teams.info", world["bob"], db).sees_team("team-a")
    # A viewer role that administers a team reads the team's keys but writes nothing.
    vera = policy.scope("keys.info", world["vera"], db)
    assert vera.sees_key({"user_id": "alice", "team_id": "team-a"})
    assert policy.scope("keys.update", world["vera"], db) is policy.NOTHING
    assert policy.scope("keys.update", Caller("master"), db) is policy.ALL
    viewer = Caller("key", world["ann"].rules.__class__(**{**world["ann"].rules.__dict__,
                                                           "user_role": "proxy_admin_viewer"}))
    assert policy.scope("keys.list_keys", viewer, db).all
    assert policy.scope("keys.update", viewer, db) is policy.NOTHING


def test_key_writes_are_refused_field_by_field(keys, world):
    db = keys.db

    def write(who, body, current=None, endpoint="keys.generate"):
        return policy.check_key_write(policy.scope(endpoint, world[who], db), db, body, current)

    def refused(who, body, param, current=None, endpoint="keys.generate"):
        with pytest.raises(errors.PermissionDeniedError) as caught:
            write(who, body, current, endpoint)
        assert caught.value.param == param, caught.value.message
        return caught.value

    assert write("ivan", {})["user_id"] == "ivan"  # its own key
    assert write("alice", {"team_id": "team-a"}) == {"team_id": "team-a", "user_id": "alice"}
    assert write("ann", {"team_id": "team-a", "user_id": "alice", "max_budget": 10, "tpm_limit": 5000})
    refused("ivan", {"user_role": "proxy_admin"}, "user_role")
    refused("ivan", {"user_id": "alice"}, "user_id")
    refused("alice", {"team_id": "team-a", "user_id": "ann"}, "user_id")
    refused("ann", {"team_id": "team-a", "user_id": "bob"}, "user_id")  # not a member of team-a
    refused("ann", {"team_id": "team-b"}, "team_id")
    refused("bob", {"team_id": "team-a"}, "team_id")
    refused("ann", {"team_id": "team-a", "max_budget": 10.01}, "max_budget")
    refused("ann", {"team_id": "team-a", "rpm_limit": 101}, "rpm_limit")
    assert refused("ann", {"team_id": "team-a", "tpm_limit": 5001}, "tpm_limit").code == "limit_above_bound"
    refused("ivan", {"max_budget": 5.5}, "max_budget")
    assert refused("ann", {"team_id": "team-a", "models": ["claude-2"]}, "models").code == "models_not_allowed"
    refused("ivan", {"models": ["gpt-4"]}, "models")
    assert write("ivan", {"models": ["gpt-3.5-turbo"], "max_budget": 5})
    # Updates: only keys it owns or whose team it administers; no move out of or into another team.
    alices = {"user_id": "alice", "team_id": "team-a"}
    bobs = {"user_id": "bob", "team_id": "team-b"}
    assert write("ann", {"metadata": {"a": 1}}, alices, "keys.update")
    assert write("alice", {"max_budget": 1}, alices, "keys.update")
    refused("ivan", {}, "key", alices, "keys.update")
    refused("ann", {}, "key", bobs, "keys.update")
    refused("alice", {"team_id": "team-b"}, "team_id", alices, "keys.update")
    refused("ann", {"team_id": None}, "team_id", alices, "keys.update")
    refused("ann", {"user_id": "bob"}, "user_id", alices, "keys.update")
    assert write("ann", {"team_id": "team-a"}, {"user_id": "ann", "team_id": None}, "keys.update")
    with pytest.raises(errors.PermissionDeniedError):
        write("vera", {"metadata": {}}, alices, "keys.update")


def test_team_updates_by_a_team_admin_touch_only_alias_and_metadata(keys, world):
    scope = policy.scope("teams.update", world["ann"], keys.db)
    policy.check_team_update(scope, {"team_id": "team-a", "team_alias": "A", "metadata": {"x": 1}})
    for name in ("max_budget", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests", "models",
                 "blocked", "organization_id", "members_with_roles"):
        with pytest.raises(errors.PermissionDeniedError) as caught:
            policy.check_team_update(scope, {"team_id": "team-a", name: None})
        assert caught.value.param == name
    with pytest.raises(errors.PermissionDeniedError) as caught:
        policy.check_team_update(scope, {"team_id": "team-b", "team_alias": "B"})
    assert caught.value.param == "team_id"
    with pytest.raises(errors.PermissionDeniedError):
        policy.check_team_admin(policy.scope("teams.member_add", world["alice"], keys.db), {"team_id": "team-a"})
    policy.check_team_admin(policy.scope("teams.member_add", world["ann"], keys.db), {"team_id": "team-a"})


def test_what_lists_show(keys, world):
    ann = policy.scope("users.list_users", world["ann"], keys.db)
    assert policy.visible_users(keys.db, ann) == {"ann", "alice", "vera"}
    assert policy.visible_users(keys.db, policy.scope("users.list_users", world["ivan"], keys.db)) == {"ivan"}
    keys.generate({"user_id": "alice", "team_id": "team-a"})
    keys.generate({"user_id": None, "team_id": "team-a"})
    listed = keys.list(owner="ann", team_ids={"team-a"})
    assert {(k["user_id"], k["team_id"]) for k in listed} == {("ann", None), ("alice", "team-a"), (None, "team-a")}
    assert {k["user_id"] for k in keys.list(owner="ivan", team_ids=frozenset())} == {"ivan"}
    assert keys.list(owner=None, team_ids=frozenset()) == []


def test_memberships_are_read_on_management_routes_only_never_on_a_call(monkeypatch, tmp_path):
    """A team admin's chat calls read no membership (the call path is unchanged); its /key/list does."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from gateway.app import create_app
    from gateway.config.settings import from_dict
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    master = "sk-master-policy-0123456789"
    app = create_app(from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                                "general_settings": {"master_key": master}}, source="test_policy"))
    client = app.test_client()
    admin = {"Authorization": f"Bearer {master}"}
    assert client.post("/team/new", json={"team_id": "t", "members_with_roles": [{"role": "admin", "user_id": "ann"}]},
                       headers=admin).status_code == 200
    key = client.post("/key/generate", json={"user_id": "ann", "team_id": "t"}, headers=admin).get_json()["key"]
    seen = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            resp = client.post("/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200, resp.get_data(as_text=True)
        assert seen and not [s for s in seen if "gateway_team_members" in s]
        assert client.get("/key/list", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert [s for s in seen if "gateway_team_members" in s]
    finally:
        event.remove(Engine, "before_cursor_execute", record)
