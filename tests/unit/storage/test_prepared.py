"""Statements compiled once and run on a DBAPI connection (gateway/storage Prepared, Database.run), on
SQLite and PostgreSQL: values bound through the column types, rows read back, and a database that
is gone said as a 503."""

import contextlib
from datetime import datetime
from datetime import timezone

import pytest

from gateway import errors
from gateway.storage import Database
from gateway.storage.responses import ResponseStore
from tests.pg import schema_url


@contextlib.contextmanager
def database(kind, tmp_path):
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'prepared.sqlite'}"
    else:
        with schema_url() as url:
            yield url


class Store:
    def __init__(self, db):
        self.db = db

    def get(self):
        return self.db


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_response_row_round_trips_through_prepared_statements(kind, tmp_path):
    with database(kind, tmp_path) as url:
        db = Database(url)
        db.migrate()
        store = ResponseStore(Store(db))
        response = {"id": "resp_" + "a" * 48, "model": "m\u00e9", "status": "completed", "output": [{"t": "x\u0000y"}]}
        rules = type("Rules", (), {"key_id": 7, "hash": "h", "team_id": "team-1"})()
        store.save(response, rules, [{"n": 1}], [{"n": 1}, {"t": "x\u0000y"}])
        row = store.load(response["id"], rules)
        assert (row.response, row.input_items, row.context) == (response, [{"n": 1}], [{"n": 1}, {"t": "x\u0000y"}])
        other_team = type("Rules", (), {"key_id": 8, "hash": "g", "team_id": "team-1"})()
        assert store.load(response["id"], other_team) is not None  # the same team reads it
        assert store.load(response["id"], None) is None and not store.delete(response["id"], None)
        assert store.delete(response["id"], rules) and store.load(response["id"], rules) is None
        with db.engine.connect() as connection:
            from sqlalchemy import text
            left = connection.execute(text("SELECT count(*) FROM gateway_responses")).scalar()
        assert left == 0
        db.engine.dispose()


def test_a_database_that_is_gone_is_a_503(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'gone' / 'missing-folder' / 'x.sqlite'}")
    prepared = db.prepare(__import__("sqlalchemy").text("SELECT 1"))
    with pytest.raises(errors.ServiceUnavailableError):
        db.run(prepared, {}, fetch=True)


def test_values_go_through_the_column_types_bind_processors(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'types.sqlite'}")
    db.migrate()
    from gateway.storage.models import StoredResponse
    from sqlalchemy import insert
    prepared = db.prepare(insert(StoredResponse.__table__))
    when = datetime(2026, 12, 7, 16, 0, 0, 123456, tzinfo=timezone.utc)
    args = prepared.arguments({"id": "r", "key_id": None, "team_id": None, "model": None, "previous_response_id": None,
                               "input_items": "[]", "context": "[]", "response": "{}", "created_at": when})
    assert isinstance(args, tuple) and "2026-12-07 16:00:00.123456" in args
