"""The one owner of a worker's database (storage.Store), and the app's wiring of it: the key service
and the spend ledger share one Database, opened on first use; while it cannot be opened, a 503."""

import logging
import time

import pytest

from gateway import errors
from gateway import storage
from gateway.app import create_app
from gateway.config.settings import from_dict
from gateway.storage import Store
from tests.pg import schema_url

MASTER = "sk-master-store-0123456789"


def test_the_database_is_opened_and_migrated_once_on_first_use(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'keys.sqlite'}")
    assert store.describe() == "not opened yet" and not (tmp_path / "keys.sqlite").exists()
    db = store.get()
    assert store.get() is db and db.at_head()
    assert store.describe() == "sqlite connected"
    db.engine.dispose()


def test_a_database_that_cannot_be_opened_is_a_503_tried_again_later(tmp_path, monkeypatch, caplog):
    store = Store(f"sqlite:///{tmp_path / 'no-such-folder' / 'keys.sqlite'}")
    monkeypatch.setattr(storage, "RETRY_SECONDS", 0.5)
    opened = []
    real = storage.Database
    monkeypatch.setattr(storage, "Database", lambda url, *pool: opened.append(url) or real(url, *pool))
    with caplog.at_level(logging.ERROR, logger="gateway.storage"):
        for _ in range(3):
            with pytest.raises(errors.ServiceUnavailableError) as info:
                store.get()
            assert info.value.code == "key_store_unavailable" and int(info.value.headers["Retry-After"]) >= 1
    assert len(opened) == 1  # within RETRY_SECONDS the 503 comes at once, without a new attempt
    assert store.describe() == "unavailable"
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["key store unavailable"]  # said once
    (tmp_path / "no-such-folder").mkdir()
    time.sleep(0.6)
    store.get().engine.dispose()
    assert len(opened) == 2 and store.describe() == "sqlite connected"


def test_calls_arriving_together_open_one_database(tmp_path, monkeypatch):
    import threading
    store = Store(f"sqlite:///{tmp_path / 'keys.sqlite'}")
    made, real = [], storage.Database

    def slow_database(*args):
        made.append(args)
        time.sleep(0.2)  # the first open is still under way when the others arrive
        return real(*args)
    monkeypatch.setattr(storage, "Database", slow_database)
    found = []
    threads = [threading.Thread(target=lambda: found.append(store.get())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 1 and len(found) == 4 and all(db is found[0] for db in found)
    found[0].engine.dispose()


def test_keys_and_the_ledger_share_the_apps_one_store(tmp_path):
    settings = from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                          "general_settings": {"master_key": MASTER,
                                               "database_url": f"sqlite:///{tmp_path / 'gw.sqlite'}",
                                               "spend_spool_dir": str(tmp_path / "spool")}}, source="test")
    gateway = create_app(settings).extensions["gateway"]
    assert gateway.auth.keys.describe() == "not opened yet"
    db = gateway.store.get()
    assert gateway.auth.keys.get().db is db
    assert gateway.spend.ledger._open_db() is db
    assert gateway.auth.keys.describe() == "sqlite connected"
    db.engine.dispose()


def test_without_a_master_key_there_is_no_store():
    gateway = create_app(from_dict({"model_list": [{"model_name": "demo", "litellm_params": {
        "model": "demo/echo"}}]}, source="test")).extensions["gateway"]
    assert gateway.store is None and gateway.auth.keys is None and gateway.spend.ledger is None


# ---- the PostgreSQL connection budget: general_settings.database_connection_pool_limit / _timeout ----

def _pg_settings(tmp_path, url, **general):
    return from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                      "general_settings": {"master_key": MASTER, "database_url": url,
                                           "spend_spool_dir": str(tmp_path / "spool"), **general}}, source="test")


def test_the_pool_settings_reach_the_postgresql_engine(tmp_path):
    with schema_url() as url:
        gateway = create_app(_pg_settings(tmp_path, url, database_connection_pool_limit=3,
                                          database_connection_timeout=0.5)).extensions["gateway"]
        db = gateway.store.get()
        try:
            assert gateway.responses.store is gateway.store  # one pool per worker, however many users
            pool = db.engine.pool  # 3 at once at most, 2 of them kept open between calls
            assert (pool.size() + pool._max_overflow, pool.size(), pool.timeout()) == (3, 2, 0.5)
        finally:
            db.engine.dispose()
        default = create_app(_pg_settings(tmp_path, url)).extensions["gateway"].store.get()
        try:
            pool = default.engine.pool
            assert (pool.size() + pool._max_overflow, pool.size(), pool.timeout()) == (10, 5, 5.0)
        finally:
            default.engine.dispose()


def test_an_exhausted_pool_is_a_prompt_503_then_serves_again(tmp_path):
    from sqlalchemy import func
    from sqlalchemy import select
    from sqlalchemy import text

    from gateway.storage.models import VirtualKey
    with schema_url() as url:
        db = storage.Database(url, pool_limit=2, pool_timeout=0.3)
        db.migrate()
        held = [db.engine.raw_connection() for _ in range(2)]
        prepared = db.prepare(select(func.count()).select_from(VirtualKey.__table__))
        try:
            def in_session():
                with db.session() as session:
                    session.execute(text("SELECT 1"))
            for attempt in (lambda: db.run(prepared, {}, fetch=True), in_session):
                started = time.monotonic()
                with pytest.raises(errors.ServiceUnavailableError) as info:
                    attempt()
                assert 0.25 <= time.monotonic() - started < 2.0  # the configured wait, never a hang
                assert info.value.code == "key_store_unavailable" and info.value.headers["Retry-After"] == "2"
            held.pop().close()
            assert db.run(prepared, {}, fetch=True)[0] == 0  # a connection is free again
        finally:
            for connection in held:
                connection.close()
            db.engine.dispose()


def test_a_full_or_busy_database_is_a_503_and_the_ledger_retries_its_rows():
    import psycopg2
    from sqlalchemy import exc as sa_errors

    from gateway.spend.statements import refused
    full = [sa_errors.OperationalError("connect", {}, psycopg2.OperationalError(message)) for message in (
        "FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections")]
    for exc in [sa_errors.TimeoutError("QueuePool limit of size 2 overflow 0 reached"), *full]:
        error = storage.unavailable(exc)
        assert isinstance(error, errors.ServiceUnavailableError) and error.code == "key_store_unavailable"
        assert error.headers["Retry-After"] == "2"
        assert not refused(exc)  # "down, retry later": the rows stay in the journal, never quarantined
    assert storage.unavailable(sa_errors.IntegrityError("INSERT", {}, ValueError("dup"))) is None


def test_a_pool_timeout_anywhere_in_a_call_is_a_503_never_a_500(tmp_path):
    from sqlalchemy import exc as sa_errors
    settings = from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                          "general_settings": {"master_key": MASTER,
                                               "database_url": f"sqlite:///{tmp_path / 'gw.sqlite'}",
                                               "spend_spool_dir": str(tmp_path / "spool")}}, source="test")
    app = create_app(settings)

    def busy():
        raise sa_errors.TimeoutError("QueuePool limit of size 1 overflow 0 reached")
    app.extensions["gateway"].auth.keys.get = busy
    resp = app.test_client().get("/key/list", headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2", resp.get_data(as_text=True)
    assert resp.get_json()["error"]["code"] == "key_store_unavailable"
