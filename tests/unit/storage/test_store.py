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
    monkeypatch.setattr(storage, "Database", lambda url: opened.append(url) or real(url))
    with caplog.at_level(logging.ERROR, logger="gateway.storage"):
        for _ in range(3):
            with pytest.raises(errors.ServiceUnavailableError) as info:
                store.get()
            assert info.value.code == "key_store_unavailable"
    assert len(opened) == 1  # within RETRY_SECONDS the 503 comes at once, without a new attempt
    assert store.describe() == "unavailable"
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["key store unavailable"]  # said once
    (tmp_path / "no-such-folder").mkdir()
    time.sleep(0.6)
    store.get().engine.dispose()
    assert len(opened) == 2 and store.describe() == "sqlite connected"


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
