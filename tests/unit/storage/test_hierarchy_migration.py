"""Migration 0004_hierarchy upgrades a database at 0003 that holds keys: every key is kept and keeps
working, and every team and user those keys name gets its row (SQLite and PostgreSQL)."""

import contextlib
import uuid

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy import text

from gateway.access.auth import check_rules
from gateway.access.hierarchy import Hierarchy
from gateway.access.keys import KeyService
from gateway.access.keys import hash_key
from gateway.access.keys import new_key
from gateway.storage import MIGRATIONS
from gateway.storage import Database

from tests.pg import schema_url as pg_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'old.sqlite'}" if request.param == "sqlite"
               else stack.enter_context(pg_schema()))
        db = Database(url)
        yield db
        db.engine.dispose()


def upgrade(db, revision):
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def old_key(connection, key, user_id=None, team_id=None, models=None):
    """A key row as a 0003 gateway wrote it (user_id / team_id were free text then)."""
    connection.execute(text(
        "INSERT INTO gateway_keys (key_hash, key_hint, user_id, team_id, models, aliases, config, metadata, "
        "spend, reserved, holds, blocked, created_at, updated_at) VALUES (:h, 'sk-...', :u, :t, :m, '{}', '{}', "
        "'{\"k\": 1}', 1.5, 0, 0, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
        {"h": hash_key(key), "u": user_id, "t": team_id, "m": models})


def test_upgrade_from_0003_keeps_keys_and_gives_their_teams_and_users_rows(database):
    upgrade(database, "0003_key_identity")
    assert "gateway_teams" not in inspect(database.engine).get_table_names()
    keys = {name: new_key() for name in ("plain", "team", "user", "both", "both2")}
    with database.engine.begin() as connection:
        old_key(connection, keys["plain"], models='["demo"]')
        old_key(connection, keys["team"], team_id="team-a")
        old_key(connection, keys["user"], user_id="ann")
        old_key(connection, keys["both"], user_id="ann", team_id="team-b")
        old_key(connection, keys["both2"], user_id="bob", team_id="team-b")
    assert not database.at_head()
    database.migrate()  # what a gateway does on start: 0003 -> head
    assert database.at_head()

    service = KeyService(database)
    for key in keys.values():
        rules = service.lookup(key)
        assert rules is not None and not rules.blocked
        check_rules(rules)
        assert service.info(key)["spend"] == 1.5 and service.info(key)["metadata"] == {"k": 1}
    assert service.lookup(keys["plain"]).models == ("demo",)
    hierarchy = Hierarchy(service)
    assert {t["team_id"] for t in hierarchy.list_teams()} == {"team-a", "team-b"}
    assert {u["user_id"] for u in hierarchy.list_users()["users"]} == {"ann", "bob"}
    assert {u["user_role"] for u in hierarchy.list_users()["users"]} == {"internal_user"}
    assert service.lookup(keys["both"]).user_role == "internal_user"
    # The backfilled team is a real one now: blocking it stops its keys.
    hierarchy.set_team_blocked({"team_id": "team-b"}, True)
    assert service.lookup(keys["both"]).blocked and not service.lookup(keys["user"]).blocked


def test_an_empty_database_migrates_to_head_with_the_hierarchy(database):
    database.migrate()
    tables = set(inspect(database.engine).get_table_names())
    assert {"gateway_organizations", "gateway_teams", "gateway_users", "gateway_team_members",
            "gateway_organization_members", "gateway_end_users"} <= tables
    hierarchy = Hierarchy(KeyService(database))
    assert hierarchy.new_team({"team_id": f"t-{uuid.uuid4().hex[:6]}"})["blocked"] is False
