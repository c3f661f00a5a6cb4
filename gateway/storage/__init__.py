"""Database access: engine and sessions (SQLite by default, PostgreSQL via database_url), migrations.

`Store` is the one owner of a worker's database, shared by the key service and the spend ledger. It
is opened only when something needs it (virtual keys need a master key); alembic migrations run on
open, under a lock, so several workers or instances starting at once apply them exactly once.
"""

import contextlib
import fcntl
import logging
import math
import os
import threading
import time
from pathlib import Path

from gateway.config.sections import DEFAULT_DB_POOL_LIMIT
from gateway.config.sections import DEFAULT_DB_TIMEOUT
from gateway.infra.coop import patched

log = logging.getLogger("gateway.storage")

DEFAULT_URL = "sqlite:///gateway.sqlite"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_ID = 7_421_001  # pg_advisory_lock key for migrations
# The newest migration (a test keeps it equal to alembic's head): a database already there is
# opened without importing alembic at all (~12 MB per worker).
HEAD_REVISION = "0011_background_jobs"
VERSION_TABLE = "gateway_alembic_version"
RETRY_SECONDS = 5.0  # after a failed open, callers get a 503 at once for this long, then it is tried again


def database_url(settings):
    """general_settings.database_url, else DATABASE_URL, else a SQLite file in the working directory."""
    return settings.general.database_url or os.environ.get("DATABASE_URL") or DEFAULT_URL


class Store:
    """A worker's database, opened and migrated on first use and shared by whoever needs it (the key
    service, the spend ledger); while it cannot be opened, a 503 (tried again after RETRY_SECONDS)."""

    def __init__(self, url, pool_limit=DEFAULT_DB_POOL_LIMIT, pool_timeout=DEFAULT_DB_TIMEOUT):
        self.url = url
        self.pool_limit, self.pool_timeout = pool_limit, pool_timeout
        self._db = None
        self._retry_at = 0.0
        self._opening = threading.Lock()

    @classmethod
    def for_settings(cls, settings):
        """The Store general_settings describe: its URL (database_url) and this worker's pool
        (database_connection_pool_limit, database_connection_timeout)."""
        general = settings.general
        return cls(database_url(settings), general.database_connection_pool_limit,
                   general.database_connection_timeout)

    def get(self):
        """The migrated Database, or ServiceUnavailableError while it cannot be opened."""
        db = self._db
        if db is None:
            # One open at a time: calls arriving together would each make an engine of their own (a
            # pool each, past the worker's connection budget) and keep using it.
            with self._opening:
                db = self._db
                if db is None:
                    db = self._db = self._open()
        return db

    def _open(self):
        if time.monotonic() < self._retry_at:
            raise _unavailable_error(self._retry_at - time.monotonic())
        db = None
        try:
            db = Database(self.url, self.pool_limit, self.pool_timeout)
            db.migrate()
        except Exception as exc:  # down, full ("too many clients") or misconfigured: say so, keep serving
            self._retry_at = time.monotonic() + RETRY_SECONDS
            log.error("key store unavailable: %s", type(exc).__name__)
            if db is not None:
                db.engine.dispose()  # give back whatever the failed open holds
            raise _unavailable_error(RETRY_SECONDS) from exc
        return db

    def describe(self):
        """For readiness (a public route): the database's kind and state, never its address."""
        if self._db is None:
            return "not opened yet" if time.monotonic() >= self._retry_at else "unavailable"
        return f"{self._db.engine.dialect.name} connected"


class Database:
    """One engine per worker process, sessions from it, and schema migrations."""

    def __init__(self, url, pool_limit=DEFAULT_DB_POOL_LIMIT, pool_timeout=DEFAULT_DB_TIMEOUT):
        from sqlalchemy import create_engine
        from sqlalchemy import event
        from sqlalchemy.orm import sessionmaker

        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=15000")
                cursor.close()
        else:
            _cooperative_psycopg()
            # At most `pool_limit` connections at once: the PostgreSQL budget is instances x workers x
            # pool_limit. Half of them stay open between calls, the rest are closed once returned, so
            # an idle worker gives connections back to the others. A call that finds all of them busy
            # waits `pool_timeout`, then gets a 503.
            kept = (pool_limit + 1) // 2
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=kept, max_overflow=pool_limit - kept,
                                        pool_timeout=pool_timeout)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self):
        """The database without credentials (for readiness and logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def session(self):
        """A session committed on success, rolled back on error."""
        session = self.Session()
        try:
            yield session
            session.commit()
        except BaseException as exc:
            try:
                session.rollback()
            except Exception:  # noqa: BLE001  (the connection is gone; the first error is the one to tell)
                log.debug("rollback failed", exc_info=True)
            _raise_unavailable(exc)
            raise
        finally:
            session.close()

    def prepare(self, statement):
        """A Core statement compiled once for this database (see Prepared)."""
        return Prepared(self.engine.dialect, statement)

    def run(self, prepared, params, fetch=False):
        """Run a Prepared statement on a pooled DBAPI connection and commit: the first row when
        `fetch`. The same 503 as session() when the database is gone."""
        dbapi = self.engine.dialect.dbapi
        try:
            raw = self.engine.raw_connection()
        except Exception as exc:
            _raise_unavailable(exc, dbapi)
            raise
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(prepared.sql, prepared.arguments(params))
                row = cursor.fetchone() if fetch else None
            finally:
                cursor.close()
            raw.commit()
            return row
        except BaseException as exc:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001  (the connection is gone; the first error is the one to tell)
                log.debug("rollback failed", exc_info=True)
            _raise_unavailable(exc, dbapi)
            raise
        finally:
            raw.close()

    def at_head(self):
        """Whether the schema is at HEAD_REVISION already (one SELECT; False when it is not there)."""
        from sqlalchemy import Column
        from sqlalchemy import MetaData
        from sqlalchemy import String
        from sqlalchemy import Table
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError
        versions = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32)))
        with self.engine.connect() as connection:  # a server that refuses us ("too many clients") raises
            try:
                return connection.execute(select(versions.c.version_num)).scalars().all() == [HEAD_REVISION]
            except SQLAlchemyError:
                return False

    def migrate(self):
        """Bring the schema to the newest revision, once, however many processes start together."""
        with self._file_lock():  # SQLite: even the first look (its first connection) waits here
            if self.at_head():
                return
            from alembic import command
            from alembic.config import Config
            from sqlalchemy import text

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.connect() as connection, self._migration_lock(connection, text):
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()

    @contextlib.contextmanager
    def _migration_lock(self, connection, text):
        if not self.is_sqlite:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_ID})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_ID})
                connection.commit()
        else:
            yield  # SQLite: _file_lock is held already

    @contextlib.contextmanager
    def _file_lock(self):
        """SQLite: one process at a time, from before its first connection (PRAGMA journal_mode=WAL
        on a new file fails with "database is locked" when two connections switch it at once)."""
        if not self.is_sqlite:
            yield
            return
        path = self.engine.url.database
        lock_path = (path if path and path != ":memory:" else "/tmp/gateway-memory") + ".migrate-lock"
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class Prepared:
    """A Core statement compiled once for a dialect, run on a pooled DBAPI connection without
    SQLAlchemy's execution machinery (Database.run): for the statements on the path of a call, where
    that machinery cost more than the database (a SELECT by key: 64 us through Core, 7 us here, on
    SQLite). The SQL is SQLAlchemy's own compilation, values bound as parameters, through the
    column types' own bind processors."""

    __slots__ = ("sql", "names", "processors")

    def __init__(self, dialect, statement):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup) if dialect.positional else None
        self.processors = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def arguments(self, params):
        """The DBAPI parameters for these values (a tuple for positional dialects, else a mapping)."""
        if self.processors:
            params = {k: (self.processors[k](v) if k in self.processors else v) for k, v in params.items()}
        return tuple(params[name] for name in self.names) if self.names is not None else params


def _raise_unavailable(exc, dbapi=None):
    """The database went away mid-request, or is full: a 503 the client can retry, never a 500."""
    error = unavailable(exc, dbapi)
    if error is not None:
        raise error from exc


def unavailable(exc, dbapi=None):
    """The 503 for an error that says the database cannot serve now (down, gone mid-request, refusing
    connections as "too many clients", or no pooled connection free within database_connection_timeout),
    else None (a bug, bad data: not the client's to retry)."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        log.error("database busy: no pooled connection free in time (database_connection_pool_limit)")
        return _unavailable_error(2, busy=True)
    raw_gone = dbapi is not None and isinstance(exc, (dbapi.OperationalError, dbapi.InterfaceError))
    if raw_gone or isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        log.error("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        return _unavailable_error(2)
    return None


def _unavailable_error(retry_after, busy=False):
    from gateway import errors
    message = ("The key store is busy; retry shortly." if busy
               else "The key store is unavailable; retry shortly.")
    return errors.ServiceUnavailableError(message, code="key_store_unavailable",
                                          headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


def _cooperative_psycopg():
    """Under gevent, make psycopg2 wait cooperatively instead of blocking the worker."""
    if patched("socket"):
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()
