"""The real PostgreSQL for storage tests: a fresh schema per use; CI fails (never skips) without it."""

import contextlib
import os
import uuid

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text

PG_URL = os.environ.get("GATEWAY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def admin_engine():
    """An autocommit engine on the shared PostgreSQL; fails in CI, skips elsewhere, if it is down."""
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  (any reason the server cannot be used)
        engine.dispose()
        if IN_CI:
            pytest.fail(f"CI needs PostgreSQL at {PG_URL}: {type(exc).__name__}: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL} ({type(exc).__name__})")
    return engine


@contextlib.contextmanager
def schema():
    """(URL whose search_path is a fresh schema, admin engine, schema name); dropped afterwards.

    The schema name is generated here (hex only), so quoting it into DDL is safe; identifiers
    cannot be bound parameters."""
    admin = admin_engine()
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{name}", admin, name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def schema_url():
    """Just the URL of a fresh schema."""
    with schema() as (url, _admin, _name):
        yield url
