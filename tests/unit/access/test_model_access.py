"""Wildcards, access groups and LiteLLM's special model names in what a key may use: its own list
within its team's within its organization's, and what a non-admin may grant, on SQLite and on the
real PostgreSQL (the `db` fixture of test_keys: both databases)."""

import pytest

from gateway import errors
from gateway.access import policy
from gateway.access.auth import Caller
from gateway.access.hierarchy import Hierarchy
from gateway.access.keys import KeyService
from gateway.access.levels import narrowed

from tests.unit.access.test_keys import db  # noqa: F401  (fixtures: sqlite and postgresql)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401

GROUPS = {"beta": frozenset({"gpt-4o", "anthropic/*"}), "prod": frozenset({"small"})}


@pytest.fixture
def keys(db):  # noqa: F811
    return KeyService(db, access_groups=GROUPS.get)


def models(keys, **body):
    return keys.lookup(keys.generate(body)["key"]).models


def test_narrowed_keeps_what_both_lists_allow():
    assert narrowed(("c", "d", "e"), ("a", "b", "c")) == ("c",)  # plain lists: the plain intersection
    assert narrowed(("anthropic/*",), ("anthropic/claude-3", "gpt-4o")) == ("anthropic/claude-3",)
    assert narrowed(("anthropic/claude-*", "x"), ("anthropic/*",)) == ("anthropic/claude-*",)
    assert narrowed(("beta",), ("gpt-4o", "small"), GROUPS.get) == ("gpt-4o",)
    assert narrowed(("beta",), ("gpt-4o", "small")) == ()  # no access groups known: a plain name


def test_special_names_and_wildcards_in_levels(keys):
    h = Hierarchy(keys)
    assert models(keys, models=["*"]) is None  # everything
    assert models(keys, models=["all-proxy-models"]) is None
    assert models(keys, models=["anthropic/*"]) == ("anthropic/*",)
    h.new_team({"team_id": "t", "models": ["gpt-4o", "anthropic/*"]})
    assert models(keys, team_id="t", models=["all-team-models"]) == ("gpt-4o", "anthropic/*")
    assert models(keys, team_id="t", models=["*"]) == ("gpt-4o", "anthropic/*")  # still within the team's
    assert models(keys, team_id="t", models=["anthropic/claude-3", "small"]) == ("anthropic/claude-3",)
    assert set(models(keys, team_id="t", models=["beta"])) == {"gpt-4o", "anthropic/*"}  # the group's
    h.new_team({"team_id": "b", "models": ["beta"]})
    assert models(keys, team_id="b") == ("beta",)  # one level: the router expands it per call
    assert models(keys, team_id="b", models=["gpt-4o", "small"]) == ("gpt-4o",)
    h.new_organization({"organization_id": "o", "models": ["prod", "gpt-4o"]})
    h.new_team({"team_id": "ob", "organization_id": "o", "models": ["all-proxy-models"]})
    assert models(keys, team_id="ob") == ("prod", "gpt-4o")  # the team sets no limit of its own


@pytest.fixture
def world(keys):
    h = Hierarchy(keys)
    h.new_team({"team_id": "wild", "models": ["anthropic/*", "beta"],
                "members_with_roles": [{"role": "admin", "user_id": "ann"}]})
    return {"ann": Caller("key", keys.lookup(keys.generate({"user_id": "ann"})["key"]))}


def test_a_team_admin_grants_only_within_the_teams_wildcards_and_groups(keys, world):
    db = keys.db

    def write(models):
        return policy.check_key_write(policy.scope("keys.generate", world["ann"], db), db,
                                      {"team_id": "wild", "models": models}, None, GROUPS.get)

    for ok in (["anthropic/claude-3"], ["anthropic/claude-*"], ["anthropic/*"], ["beta"], ["gpt-4o"],
               ["all-team-models"]):
        assert write(ok)["models"] == ok
    for outside in (["*"], ["all-proxy-models"], ["openai/*"], ["small"], ["prod"], ["gpt-4o-mini"]):
        with pytest.raises(errors.PermissionDeniedError) as caught:
            write(outside)
        assert caught.value.param == "models" and caught.value.code == "models_not_allowed"
