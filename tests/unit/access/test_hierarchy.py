"""The hierarchy service (organizations, teams, members, users, end users) and what keys inherit
from it, on SQLite and on the real PostgreSQL (the `db` fixture of test_keys: both databases)."""

import pytest
from sqlalchemy import text

from gateway import errors
from gateway.access.auth import check_rules
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
def h(keys):
    return Hierarchy(keys)


def rules(keys, key):
    return keys.lookup(key)


# ---- create, read, update, delete ------------------------------------------------------------------

def test_organization_team_user_crud_in_litellm_shapes(h):
    org = h.new_organization({"organization_alias": "acme", "models": ["gpt-4", "demo"], "max_budget": 100,
                              "budget_duration": "30d", "tpm_limit": 0, "metadata": {"cost_center": 7}})
    assert org["organization_id"] and org["organization_alias"] == "acme"
    assert org["tpm_limit"] == 0 and org["max_budget"] == 100 and org["budget_reset_at"] is not None
    team = h.new_team({"team_id": "t-1", "team_alias": "Research", "organization_id": org["organization_id"],
                       "models": ["demo"], "rpm_limit": 10, "max_parallel_requests": 2})
    assert team["team_id"] == "t-1" and team["organization_id"] == org["organization_id"]
    assert team["members_with_roles"] == [] and team["blocked"] is False
    generated = h.new_team({})
    assert len(generated["team_id"]) == 36  # a uuid4 when absent
    user = h.new_user({"user_id": "alice", "user_email": "Alice@Example.com", "teams": ["t-1"], "max_budget": 5})
    assert user["user_role"] == "internal_user" and user["teams"] == ["t-1"] and user["key"].startswith("sk-")
    assert h.new_user({"user_email": "bob@example.com", "auto_create_key": False}).get("key") is None

    info = h.team_info("t-1")
    assert info["team_info"]["members_with_roles"] == [
        {"role": "user", "user_id": "alice", "user_email": "Alice@Example.com"}]
    assert info["team_memberships"] == [{"team_id": "t-1", "user_id": "alice", "role": "user"}]
    assert h.organization_info(org["organization_id"])["teams"] == [{"team_id": "t-1", "team_alias": "Research"}]
    user_info = h.user_info("alice")
    assert [k["token"] for k in user_info["keys"]] == [user["token"]]
    assert [t["team_id"] for t in user_info["teams"]] == ["t-1"]

    updated = h.update_team({"team_id": "t-1", "team_alias": "R&D", "tpm_limit": 5, "metadata": {"a": 1}})
    assert updated["team_id"] == "t-1" and updated["data"]["team_alias"] == "R&D" and updated["data"]["tpm_limit"] == 5
    assert h.update_user({"user_email": "alice@example.com", "user_alias": "A"})["data"]["user_alias"] == "A"
    assert h.update_organization({"organization_id": org["organization_id"], "max_budget": 7})["max_budget"] == 7
    assert {t["team_id"] for t in h.list_teams()} == {"t-1", generated["team_id"]}
    assert [t["team_id"] for t in h.list_teams(org["organization_id"])] == ["t-1"]
    listed = h.list_users(page=1, page_size=1)
    assert listed["total"] == 2 and listed["total_pages"] == 2 and len(listed["users"]) == 1
    assert [o["organization_id"] for o in h.list_organizations()] == [org["organization_id"]]


def test_members_add_update_delete(h, keys):
    h.new_team({"team_id": "t"})
    added = h.member_add({"team_id": "t", "member": [{"role": "admin", "user_id": "ann"},
                                                     {"role": "user", "user_email": "ben@x.io"}]})
    assert [m["role"] for m in added["members_with_roles"]] == ["admin", "user"]
    assert added["admins"] == ["ann"] and len(added["updated_users"]) == 2  # users made, as LiteLLM does
    ben = added["updated_users"][1]["user_id"]
    with pytest.raises(errors.BadRequestError) as again:
        h.member_add({"team_id": "t", "member": {"role": "user", "user_id": "ann"}})
    assert again.value.code == "already_member"
    assert h.member_update({"team_id": "t", "user_email": "BEN@x.io", "role": "admin"})["role"] == "admin"
    key = keys.generate({"team_id": "t", "user_id": ben})["key"]
    other = keys.generate({"team_id": "t", "user_id": "ann"})["key"]
    left = h.member_delete({"team_id": "t", "user_id": ben})
    assert left["members"] == ["ann"]
    assert keys.lookup(key) is None and keys.lookup(other) is not None  # its keys in the team went with it
    with pytest.raises(errors.NotFoundError):
        h.member_delete({"team_id": "t", "user_id": ben})
    with pytest.raises(errors.BadRequestError) as bad:
        h.member_update({"team_id": "t", "user_id": "ann", "role": "owner"})
    assert bad.value.param == "role"


def test_customers(h):
    made = h.new_customer({"user_id": "end-1", "alias": "Shop", "max_budget": 3, "rpm_limit": 4})
    assert made["user_id"] == "end-1" and made["litellm_budget_table"]["max_budget"] == 3
    with pytest.raises(errors.BadRequestError) as dup:
        h.new_customer({"user_id": "end-1"})
    assert dup.value.status == 400 and "already exists" in dup.value.message  # LiteLLM's status
    assert h.update_customer({"user_id": "end-1", "blocked": True})["blocked"] is True
    blocked = h.set_customers_blocked(["end-2"], True)["blocked_users"]  # an unknown one is made, blocked
    assert blocked[0]["user_id"] == "end-2" and blocked[0]["blocked"] is True
    assert h.set_customers_blocked(["end-1", "end-2"], False)["unblocked_users"][0]["blocked"] is False
    assert {c["user_id"] for c in h.list_customers()} == {"end-1", "end-2"}
    assert h.customer_info("end-1")["alias"] == "Shop"
    assert h.delete_customers(["end-1", "end-2"])["deleted_customers"] == 2
    with pytest.raises(errors.NotFoundError) as gone:
        h.customer_info("end-1")
    assert gone.value.param == "end_user_id"
    with pytest.raises(errors.NotFoundError):
        h.set_customers_blocked(["nobody"], False)


DEEP = 1
for _ in range(25):
    DEEP = [DEEP]


# ---- errors ----------------------------------------------------------------------------------------

def test_duplicates_get_litellms_statuses(h):
    h.new_team({"team_id": "t"})
    with pytest.raises(errors.BadRequestError) as team:
        h.new_team({"team_id": "t"})
    assert team.value.status == 400 and team.value.message.startswith("Team id = t already exists")
    h.new_user({"user_id": "u", "user_email": "u@x.io", "auto_create_key": False})
    for body in ({"user_id": "u"}, {"user_email": "U@X.IO"}):
        with pytest.raises(errors.BadRequestError) as user:
            h.new_user({**body, "auto_create_key": False})
        assert user.value.status == 409 and user.value.code == "user_exists"
    h.new_user({"user_id": "v", "auto_create_key": False})
    with pytest.raises(errors.BadRequestError) as taken:
        h.update_user({"user_id": "v", "user_email": "u@X.io"})
    assert taken.value.status == 409
    org = h.new_organization({"organization_id": "o"})
    with pytest.raises(errors.BadRequestError) as again:
        h.new_organization({"organization_id": org["organization_id"]})
    assert again.value.status == 409


@pytest.mark.parametrize("call", [
    lambda h: h.team_info("nope"), lambda h: h.user_info("nope"), lambda h: h.organization_info("nope"),
    lambda h: h.customer_info("nope"), lambda h: h.update_team({"team_id": "nope"}),
    lambda h: h.update_user({"user_id": "nope"}), lambda h: h.update_organization({"organization_id": "nope"}),
    lambda h: h.update_customer({"user_id": "nope"}), lambda h: h.delete_teams(["nope"]),
    lambda h: h.delete_users(["nope"]), lambda h: h.delete_organizations(["nope"]),
    lambda h: h.delete_customers(["nope"]), lambda h: h.set_team_blocked({"team_id": "nope"}, True),
    lambda h: h.member_add({"team_id": "nope", "member": {"user_id": "x"}}),
    lambda h: h.organization_member_add({"organization_id": "nope", "member": {"user_id": "x"}}),
    lambda h: h.new_team({"organization_id": "nope"}), lambda h: h.new_user({"teams": ["nope"]}),
])
def test_unknown_ids_are_404(h, call):
    with pytest.raises(errors.NotFoundError):
        call(h)


@pytest.mark.parametrize("body, field", [
    ({"team_id": "a\x00b"}, "team_id"), ({"team_alias": "\x00"}, "team_alias"), ({"team_id": ""}, "team_id"),
    ({"team_id": "x" * 256}, "team_id"), ({"models": ["\x00"]}, "models"), ({"models": "demo"}, "models"),
    ({"max_budget": -1}, "max_budget"), ({"max_budget": "lots"}, "max_budget"),
    ({"tpm_limit": 2**31}, "tpm_limit"), ({"rpm_limit": -1}, "rpm_limit"), ({"rpm_limit": 1.5}, "rpm_limit"),
    ({"max_parallel_requests": "2"}, "max_parallel_requests"), ({"blocked": "false"}, "blocked"),
    ({"metadata": [1]}, "metadata"), ({"metadata": {"a": "\x00"}}, "metadata"),
    ({"metadata": {"d": DEEP}}, "metadata"),
    ({"metadata": {"big": "x" * 70000}}, "metadata"), ({"budget_duration": "soon"}, "budget_duration"),
    ({"members_with_roles": [{"role": "owner", "user_id": "u"}]}, "role"),
    ({"members_with_roles": [{"role": "user"}]}, "member"),
])
def test_bad_team_bodies_name_the_field_and_store_nothing(h, body, field):
    with pytest.raises(errors.BadRequestError) as info:
        h.new_team(body)
    assert info.value.param == field, info.value.message
    assert h.list_teams() == []


@pytest.mark.parametrize("body, field", [
    ({"user_role": "root"}, "user_role"), ({"user_email": "a\x00@x"}, "user_email"), ({"teams": "t"}, "teams"),
    ({"auto_create_key": "no"}, "auto_create_key"), ({"user_id": 5}, "user_id"),
])
def test_bad_user_bodies_name_the_field(h, body, field):
    with pytest.raises(errors.BadRequestError) as info:
        h.new_user(body)
    assert info.value.param == field


def test_only_a_proxy_admin_sets_a_role(h):
    with pytest.raises(errors.PermissionDeniedError):
        h.new_user({"user_id": "x", "user_role": "proxy_admin"}, by_admin=False)
    h.new_user({"user_id": "x", "auto_create_key": False})
    with pytest.raises(errors.PermissionDeniedError):
        h.update_user({"user_id": "x", "user_role": "proxy_admin"}, by_admin=False)
    assert h.user_info("x")["user_info"]["user_role"] == "internal_user"
    assert h.update_user({"user_id": "x", "user_role": "proxy_admin_viewer"})["data"]["user_role"] == \
        "proxy_admin_viewer"


def test_ids_are_free_text_stored_and_returned_as_given(h, db):  # noqa: F811
    hostile = "t'); DROP TABLE gateway_teams; -- <script>alert(1)</script> ünï"
    h.new_team({"team_id": hostile, "team_alias": "<b>x</b>"})
    assert h.team_info(hostile)["team_info"]["team_alias"] == "<b>x</b>"
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM gateway_teams")).scalar() == 1


def test_an_organization_with_teams_is_not_deleted(h):
    h.new_organization({"organization_id": "o"})
    h.new_team({"team_id": "t", "organization_id": "o"})
    with pytest.raises(errors.BadRequestError) as info:
        h.delete_organizations(["o"])
    assert info.value.code == "organization_has_teams"
    h.update_team({"team_id": "t", "organization_id": None})
    assert h.delete_organizations(["o"])[0]["organization_id"] == "o"


# ---- what keys inherit -----------------------------------------------------------------------------

def test_key_generate_needs_an_existing_team_and_makes_its_user(h, keys):
    with pytest.raises(errors.NotFoundError) as info:
        keys.generate({"team_id": "ghost"})
    assert info.value.status == 404 and "Team doesn't exist in db" in info.value.message
    assert keys.generate({"user_id": "new-user"})["user_id"] == "new-user"
    assert h.user_info("new-user")["user_info"]["user_role"] == "internal_user"  # made, as LiteLLM does
    h.new_team({"team_id": "t"})
    key = keys.generate({})["key"]
    with pytest.raises(errors.NotFoundError):
        keys.update({"key": key, "team_id": "ghost"})
    assert keys.update({"key": key, "team_id": "t"})["team_id"] == "t"
    assert keys.generate({})["team_id"] is None  # keys outside the hierarchy work as before


@pytest.mark.parametrize("level", ["team", "organization", "user"])
def test_a_block_anywhere_above_refuses_the_key_at_once(h, keys, level):
    h.new_organization({"organization_id": "o"})
    h.new_team({"team_id": "t", "organization_id": "o"})
    key = keys.generate({"team_id": "t", "user_id": "u"})["key"]
    check_rules(keys.lookup(key))
    {"team": lambda: h.set_team_blocked({"team_id": "t"}, True),
     "organization": lambda: h.update_organization({"organization_id": "o", "blocked": True}),
     "user": lambda: h.update_user({"user_id": "u", "blocked": True})}[level]()
    found = keys.lookup(key)  # no wait: the cache was cleared by the change
    assert found.blocked and found.blocked_by == level
    with pytest.raises(errors.PermissionDeniedError) as info:
        check_rules(found)
    assert info.value.code == f"{level}_blocked"


@pytest.mark.parametrize("what", ["team", "user"])
def test_deleting_a_team_or_user_deletes_its_keys_and_keeps_the_ledger(h, keys, db, what):  # noqa: F811
    h.new_team({"team_id": "t"})
    key = keys.generate({"team_id": "t", "user_id": "u"})
    spare = keys.generate({})["key"]
    with db.engine.begin() as connection:
        connection.execute(text("INSERT INTO gateway_spend (request_id, key_hash, user_id, team_id, call_type, "
                                "prompt_tokens, completion_tokens, total_tokens, cost, estimated, cache_hit, "
                                "stream, status, start_time, end_time) VALUES ('r1', :h, 'u', 't', 'chat', 1, 1, "
                                "2, 0.5, false, false, false, 'success', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                           {"h": key["token"]})
    assert keys.lookup(key["key"]) is not None
    if what == "team":
        assert h.delete_teams(["t"]) == {"deleted_teams": ["t"]}
    else:
        assert h.delete_users(["u"]) == {"deleted_users": ["u"]}
    assert keys.lookup(key["key"]) is None and keys.lookup(spare) is not None
    with pytest.raises(errors.NotFoundError):
        keys.info(key["token"])
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM gateway_spend")).scalar() == 1


def test_a_key_whose_team_vanished_under_it_is_refused(h, keys, db):  # noqa: F811
    """A key made while its team was being deleted (the check passed, the delete committed first)."""
    h.new_team({"team_id": "t"})
    key = keys.generate({"team_id": "t"})["key"]
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM gateway_teams WHERE team_id = 't'"))
    keys.changed_all()
    found = keys.lookup(key)
    assert found.blocked and found.blocked_by == "team_deleted"


def test_effective_models_nest_key_within_team_within_organization(h, keys):
    h.new_organization({"organization_id": "o", "models": ["a", "b", "c"]})
    h.new_team({"team_id": "t", "organization_id": "o", "models": ["b", "c", "d"]})
    assert set(rules(keys, keys.generate({"team_id": "t"})["key"]).models) == {"b", "c"}
    assert rules(keys, keys.generate({"team_id": "t", "models": ["c", "d", "e"]})["key"]).models == ("c",)
    assert rules(keys, keys.generate({"team_id": "t", "models": ["a"]})["key"]).models == ()  # allows none
    h.new_team({"team_id": "open"})
    assert rules(keys, keys.generate({"team_id": "open"})["key"]).models is None  # [] / null: all
    h.update_team({"team_id": "t", "models": []})  # the team now allows all its organization does
    key = keys.generate({"team_id": "t", "models": ["a", "z"]})["key"]
    assert rules(keys, key).models == ("a",)
    # A key outside any team is held to its user's models.
    h.new_user({"user_id": "u", "models": ["x"], "auto_create_key": False})
    assert rules(keys, keys.generate({"user_id": "u", "models": ["x", "y"]})["key"]).models == ("x",)


def test_a_key_acts_with_its_users_role(h, keys):
    admin = h.new_user({"user_id": "root", "user_role": "proxy_admin"})["key"]
    assert keys.lookup(admin).user_role == "proxy_admin"
    h.update_user({"user_id": "root", "user_role": "internal_user_viewer"})
    assert keys.lookup(admin).user_role == "internal_user_viewer"
    assert keys.lookup(keys.generate({})["key"]).user_role is None


def test_the_lookup_is_one_statement(h, keys, db):  # noqa: F811
    from tests.unit.access.test_keys import count_statements
    h.new_organization({"organization_id": "o", "models": ["a"]})
    h.new_team({"team_id": "t", "organization_id": "o"})
    key = keys.generate({"team_id": "t", "user_id": "u"})["key"]
    keys.changed_all()
    statements = count_statements(db)
    assert keys.lookup(key).models == ("a",)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
