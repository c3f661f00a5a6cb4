"""Models stored in the database (gateway/routing/dbmodels.py, gateway/api/model_admin.py), on SQLite and
PostgreSQL: the round trip, secrets encrypted in the table, a changed salt key, bad entries refused
with a 400 naming the field (never stored), update and delete, config models left alone, and a change
seen by another worker (shared counter) and another instance (database poll)."""

import contextlib
import logging
import uuid

import pytest
from sqlalchemy import Text
from sqlalchemy import cast
from sqlalchemy import select

from gateway.app import create_app
from gateway.config.settings import from_dict
from gateway.routing import dbmodels
from gateway.routing.dbmodels import ModelStore
from gateway.storage import Database
from gateway.storage.models import StoredModel
from tests.pg import schema_url as pg_schema

MASTER = "sk-master-dbmodels"
CANARY = "sk-CANARY-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database nobody else uses: a SQLite file, or a PostgreSQL schema of its own."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'models.sqlite'}"
        else:
            yield stack.enter_context(pg_schema())


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    database.migrate()
    yield database
    database.engine.dispose()


def _store(db, salt="salt-A"):
    return ModelStore(lambda: db, MASTER, environ={"GATEWAY_SALT_KEY": salt})


def _entry(name="db-gpt", **params):
    return {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": CANARY,
                                                   "api_base": "http://127.0.0.1:9/v1", **params}}


def _raw_columns(db):
    """Every column of every stored model, as the database holds it (JSON read as text)."""
    table = StoredModel.__table__
    with db.engine.connect() as connection:
        rows = connection.execute(select(*[cast(c, Text) for c in table.columns])).all()
    return " ".join(str(v) for row in rows for v in row)


def test_a_stored_model_loads_back_with_its_key_and_its_id(db):
    store = _store(db)
    row = store.add(_entry(rpm=10), "default_user_id")
    version, configs = store.load(first_index=3)
    assert version == 1 and len(configs) == 1
    config = configs[0]
    assert config.model_name == "db-gpt" and config.params["api_key"] == CANARY and config.params["rpm"] == 10
    assert config.model_info == {"id": row.id, "db_model": True} and config.index == 3


def test_secret_values_are_encrypted_in_the_table(db):
    store = _store(db)
    store.add(_entry(aws_secret_access_key="aws-CANARY-secret", vertex_credentials={"private_key": "pk-CANARY"},
                     extra_headers={"X-Auth": "hdr-CANARY"}), "default_user_id")
    raw = _raw_columns(db)
    assert "db-gpt" in raw and "gateway-enc:v1:" in raw  # the row is there, its secrets sealed
    for canary in (CANARY, "aws-CANARY-secret", "pk-CANARY", "hdr-CANARY"):
        assert canary not in raw
    params = store.load()[1][0].params
    assert params["vertex_credentials"] == {"private_key": "pk-CANARY"}
    assert params["extra_headers"] == {"X-Auth": "hdr-CANARY"}


def test_a_model_sealed_with_another_salt_key_is_skipped_with_its_id_logged(db, caplog):
    row = _store(db, salt="salt-A").add(_entry(), "default_user_id")
    good = _store(db, salt="salt-B").add(_entry("other", api_key="sk-other-key-1234"), "default_user_id")
    caplog.set_level(logging.WARNING, logger="gateway.routing.dbmodels")
    _version, configs = _store(db, salt="salt-B").load()
    assert [c.model_info["id"] for c in configs] == [good.id]
    lines = [r.getMessage() for r in caplog.records]
    assert any(row.id in line and "cannot be decrypted" in line for line in lines)
    assert not any(CANARY in line for line in lines)


def test_the_master_key_is_the_salt_when_none_is_set(db):
    store = ModelStore(lambda: db, MASTER, environ={})
    store.add(_entry(), "default_user_id")
    assert ModelStore(lambda: db, MASTER, environ={}).load()[1][0].params["api_key"] == CANARY
    assert ModelStore(lambda: db, MASTER, environ={"LITELLM_SALT_KEY": "other"}).load()[1] == []


# -- through the routes ----------------------------------------------------------------------------


def _app(db_url, tmp_path, store=True, state="state"):
    settings = from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"},
                        "model_info": {"id": "config-demo"}}],
        "router_settings": {"local_state_path": str(tmp_path / state)},
        "general_settings": {"master_key": MASTER, "database_url": db_url, "store_model_in_db": store}})
    return create_app(settings).test_client()


@pytest.fixture
def client(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SALT_KEY", "salt-A")
    return _app(db_url, tmp_path)


def _chat(client, model):
    return client.post("/chat/completions", headers=ADMIN,
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _rows(db_url):
    database = Database(db_url)
    try:
        with database.session() as session:
            return session.execute(select(StoredModel)).scalars().all()
    finally:
        database.engine.dispose()


BAD = [
    ({"litellm_params": {"model": "demo/echo"}}, "model_name"),
    ({"model_name": "x"}, "litellm_params"),
    ({"model_name": "x", "litellm_params": {}}, "litellm_params.model"),
    ({"model_name": "x", "litellm_params": {"model": ""}}, "litellm_params.model"),
    ({"model_name": "x", "litellm_params": {"model": "nosuchprovider/m"}}, "litellm_params.model"),
    ({"model_name": "x", "litellm_params": {"model": "openai/"}}, "litellm_params.model"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "rpm": -1}}, "litellm_params.rpm"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "tpm": "many"}}, "litellm_params.tpm"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "timeout": 0}}, "litellm_params.timeout"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "input_cost_per_token": -1}},
     "litellm_params.input_cost_per_token"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo"}, "model_info": {"max_input_tokens": -5}},
     "model_info.max_input_tokens"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "api_key": "os.environ/NOT_SET_H14C"}},
     "litellm_params.api_key"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo"}, "model_info": {"id": 7}}, "model_info.id"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo"}, "model_info": {"id": "config-demo"}},
     "model_info.id"),
    ({"model_name": "x", "litellm_params": {"model": "demo/echo", "headers": {"a": 1}}}, "litellm_params.headers"),
]


@pytest.mark.parametrize("entry, field", BAD, ids=[f for _e, f in BAD])
def test_a_bad_entry_is_refused_naming_the_field_and_never_stored(client, db_url, entry, field):
    answer = client.post("/model/new", headers=ADMIN, json=entry)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["param"].startswith(field) and field in answer.json["error"]["message"]
    assert _rows(db_url) == []


def test_new_serves_the_model_and_answers_without_the_key(client, db_url):
    answer = client.post("/model/new", headers=ADMIN, json={
        "model_name": "db-demo", "litellm_params": {"model": "demo/echo", "api_key": CANARY},
        "model_info": {"id": "my-id", "mode": "chat"}})
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["model_id"] == "my-id" and body["model_name"] == "db-demo"
    assert body["model_info"] == {"mode": "chat", "id": "my-id", "db_model": True}
    assert body["created_by"] == "default_user_id" and CANARY not in answer.text
    assert _chat(client, "db-demo").status_code == 200
    assert "db-demo" in [m["id"] for m in client.get("/models", headers=ADMIN).json["data"]]
    again = client.post("/model/new", headers=ADMIN, json={"model_name": "y", "litellm_params": {
        "model": "demo/echo"}, "model_info": {"id": "my-id"}})
    assert again.status_code == 400 and again.json["error"]["code"] == "model_exists"


def test_update_merges_keeps_the_key_and_is_checked(client, db_url):
    client.post("/model/new", headers=ADMIN, json={"model_name": "db-demo", "litellm_params": {
        "model": "demo/echo", "api_key": CANARY, "rpm": 5}, "model_info": {"id": "m1"}})
    answer = client.post("/model/update", headers=ADMIN, json={"model_info": {"id": "m1", "mode": "chat"},
                                                               "model_name": "renamed",
                                                               "litellm_params": {"rpm": None, "tpm": 100}})
    assert answer.status_code == 200, answer.json
    assert answer.json["litellm_params"] == {"model": "demo/echo", "tpm": 100} and CANARY not in answer.text
    assert _chat(client, "renamed").status_code == 200 and _chat(client, "db-demo").status_code == 404
    [row] = _rows(db_url)
    assert row.model_name == "renamed" and "rpm" not in row.litellm_params and CANARY not in str(row.litellm_params)
    bad = client.patch("/model/m1/update", headers=ADMIN, json={"litellm_params": {"rpm": -2}})
    assert bad.status_code == 400 and bad.json["error"]["param"] == "litellm_params.rpm"
    patched = client.patch("/model/m1/update", headers=ADMIN, json={"litellm_params": {"rpm": 7}})
    assert patched.status_code == 200 and patched.json["litellm_params"]["rpm"] == 7
    missing = client.patch("/model/nope/update", headers=ADMIN, json={"model_name": "z"})
    assert missing.status_code == 404
    no_id = client.post("/model/update", headers=ADMIN, json={"model_name": "z"})
    assert no_id.status_code == 400 and no_id.json["error"]["param"] == "model_info.id"


def test_delete_stops_serving_and_config_models_stay(client, db_url):
    client.post("/model/new", headers=ADMIN, json={"model_name": "db-demo", "litellm_params": {
        "model": "demo/echo"}, "model_info": {"id": "m1"}})
    assert _chat(client, "db-demo").status_code == 200
    answer = client.post("/model/delete", headers=ADMIN, json={"id": "m1"})
    assert answer.status_code == 200 and answer.json == {"message": "Model: m1 deleted successfully"}
    assert _chat(client, "db-demo").status_code == 404 and _rows(db_url) == []
    assert client.post("/model/delete", headers=ADMIN, json={"id": "m1"}).status_code == 404
    for call in (lambda: client.post("/model/delete", headers=ADMIN, json={"id": "config-demo"}),
                 lambda: client.patch("/model/config-demo/update", headers=ADMIN, json={"model_name": "z"}),
                 lambda: client.post("/model/update", headers=ADMIN, json={"model_info": {"id": "config-demo"}})):
        refused = call()
        assert refused.status_code == 400 and refused.json["error"]["code"] == "config_model"
    assert _chat(client, "demo").status_code == 200


def test_a_virtual_key_may_not_manage_models(client):
    key = client.post("/key/generate", headers=ADMIN, json={}).json["key"]
    for path in ("/model/new", "/model/update", "/model/delete"):
        answer = client.post(path, headers={"Authorization": f"Bearer {key}"}, json={"id": "x"})
        assert answer.status_code == 403, path


def test_off_without_store_model_in_db(db_url, tmp_path):
    client = _app(db_url, tmp_path, store=False)
    answer = client.post("/model/new", headers=ADMIN, json=_entry())
    assert answer.status_code == 400 and "store_model_in_db: true" in answer.json["error"]["message"]


def test_another_worker_serves_a_change_at_its_next_call(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SALT_KEY", "salt-A")
    first, second = _app(db_url, tmp_path), _app(db_url, tmp_path)  # one instance: a shared counter
    assert _chat(second, "db-demo").status_code == 404
    first.post("/model/new", headers=ADMIN, json={"model_name": "db-demo", "litellm_params": {"model": "demo/echo"},
                                                  "model_info": {"id": "m1"}})
    assert _chat(second, "db-demo").status_code == 200
    first.post("/model/delete", headers=ADMIN, json={"id": "m1"})
    assert _chat(second, "db-demo").status_code == 404


def test_another_instance_without_redis_polls_the_database(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SALT_KEY", "salt-A")
    first, other = _app(db_url, tmp_path, state="a"), _app(db_url, tmp_path, state="b")
    assert _chat(other, "db-demo").status_code == 404
    first.post("/model/new", headers=ADMIN, json={"model_name": "db-demo", "litellm_params": {"model": "demo/echo"},
                                                  "model_info": {"id": "m1"}})
    assert _chat(other, "db-demo").status_code == 404  # not polled yet (the next poll is POLL_SECONDS away)
    sync = other.application.extensions["gateway"].models
    assert sync.poll and sync._next_poll - dbmodels.time.monotonic() <= dbmodels.POLL_SECONDS
    sync._next_poll = 0.0  # the poll is due
    assert _chat(other, "db-demo").status_code == 200


def test_reload_keeps_the_deployments_whose_config_did_not_change(client):
    router = client.application.extensions["gateway"].router
    before = {d.id: d for d in router.deployments()}
    client.post("/model/new", headers=ADMIN, json={"model_name": "db-demo", "litellm_params": {"model": "demo/echo"},
                                                   "model_info": {"id": "m1"}})
    _chat(client, "demo")
    after = {d.id: d for d in router.deployments()}
    assert after["config-demo"] is before["config-demo"] and set(after) == {"config-demo", "m1"}
    kept = after["m1"]
    client.post("/model/new", headers=ADMIN, json={"model_name": "db-2", "litellm_params": {"model": "demo/echo"},
                                                   "model_info": {"id": "m2"}})
    _chat(client, "demo")
    assert {d.id: d for d in router.deployments()}["m1"] is kept
