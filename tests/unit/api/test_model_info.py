"""The model info routes and /routes in-process (Flask test client), with the key store on SQLite and
PostgreSQL: what the master key, proxy admins and limited virtual keys see; 404s; /routes for admins."""

import contextlib
import json
import secrets

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict
from tests.pg import schema_url as pg_schema

MASTER = "sk-master-modelinfo"
BASE = "http://127.0.0.1:9/v1"
KEY_CANARY = "sk-cnry-" + secrets.token_hex(12)
ENV_CANARY = "sk-envc-" + secrets.token_hex(12)
INFO_PATHS = ("/model/info", "/v1/model/info", "/v2/model/info")


def config(tmp_path, database_url=None):
    general = {"master_key": MASTER, "spend_spool_dir": str(tmp_path / "spool"),
               **({"database_url": database_url} if database_url else {})}
    return from_dict({
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": BASE,
                                                        "api_key": KEY_CANARY, "rpm": 10}},
            {"model_name": "gpt-4o", "litellm_params": {"model": "azure/gpt-4o-dep", "api_base": BASE,
                                                        "api_key": "os.environ/MODELINFO_CANARY",
                                                        "api_version": "2024-10-21", "rpm": 5},
             "model_info": {"access_groups": ["beta"]}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20240620",
                                                        "api_base": BASE, "api_key": KEY_CANARY}},
            {"model_name": "emb", "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": BASE,
                                                     "headers": {"X-Api-Key": KEY_CANARY}}},
        ],
        "router_settings": {"model_group_alias": {"fast": "claude"},
                            "local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": general}, source="test_model_info", environ=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, monkeypatch, tmp_path):
    """A test client; keys in SQLite (tmp_path, from tests/unit/conftest.py) or a PostgreSQL schema."""
    monkeypatch.setenv("MODELINFO_CANARY", ENV_CANARY)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_schema()) if request.param == "postgresql" else None
        app = create_app(config(tmp_path, url))
        yield app.test_client()
        app.extensions["gateway"].auth.keys.get().db.engine.dispose()  # before the schema goes


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def key_for(client, **body):
    resp = client.post("/key/generate", json=body, headers=bearer(MASTER))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["key"]


def names(resp):
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [entry.get("model_name", entry.get("model_group")) for entry in resp.get_json()["data"]]


def test_the_master_key_sees_every_deployment_on_all_three_paths_without_a_secret(client):
    answers = [client.get(path, headers=bearer(MASTER)) for path in INFO_PATHS]
    assert names(answers[0]) == ["gpt-4o", "gpt-4o", "claude", "emb"]
    assert answers[0].get_json() == answers[1].get_json() == answers[2].get_json()
    for resp in answers:
        text = resp.get_data(as_text=True)
        assert KEY_CANARY not in text and ENV_CANARY not in text
    data = answers[0].get_json()["data"]
    assert data[1]["litellm_params"] == {"model": "azure/gpt-4o-dep", "api_base": BASE, "api_version": "2024-10-21",
                                         "rpm": 5}
    assert data[1]["model_info"]["access_groups"] == ["beta"] and data[0]["model_info"]["access_groups"] == []
    assert "headers" not in data[3]["litellm_params"] and data[3]["model_info"]["mode"] == "embedding"
    assert len({entry["model_info"]["id"] for entry in data}) == 4


def test_litellm_model_id_picks_one_and_an_unknown_one_is_a_404(client):
    data = client.get("/model/info", headers=bearer(MASTER)).get_json()["data"]
    wanted = data[2]["model_info"]["id"]
    one = client.get("/v2/model/info", query_string={"litellm_model_id": wanted}, headers=bearer(MASTER))
    assert one.get_json() == {"data": [data[2]]}
    for bad in ("nope", "x" * 5000, "' OR 1=1 --"):
        resp = client.get("/model/info", query_string={"litellm_model_id": bad}, headers=bearer(MASTER))
        assert resp.status_code == 404
        error = resp.get_json()["error"]
        assert error["param"] == "litellm_model_id" and error["code"] == "model_not_found"
        assert len(error["message"]) < 300


def test_a_virtual_key_sees_only_the_models_it_may_use(client):
    all_ids = {e["model_name"]: e["model_info"]["id"]
               for e in client.get("/model/info", headers=bearer(MASTER)).get_json()["data"]}
    claude_only = key_for(client, models=["claude"])
    by_alias = key_for(client, models=["fast"])  # an alias reaches its group (Router.allowed_groups)
    unlimited = key_for(client)
    for key in (claude_only, by_alias):
        for path in INFO_PATHS:
            assert names(client.get(path, headers=bearer(key))) == ["claude"]
        assert names(client.get("/model_group/info", headers=bearer(key))) == ["claude"]
        # Another group's deployment or group is a 404, as if it did not exist.
        hidden = client.get("/model/info", query_string={"litellm_model_id": all_ids["emb"]}, headers=bearer(key))
        assert hidden.status_code == 404
        group = client.get("/model_group/info", query_string={"model_group": "gpt-4o"}, headers=bearer(key))
        assert group.status_code == 404 and group.get_json()["error"]["param"] == "model_group"
    assert names(client.get("/model/info", headers=bearer(unlimited))) == ["gpt-4o", "gpt-4o", "claude", "emb"]


def test_a_proxy_admin_key_sees_everything_even_with_a_models_list(client):
    resp = client.post("/user/new", json={"user_id": "root", "user_role": "proxy_admin"}, headers=bearer(MASTER))
    admin_key = resp.get_json()["key"]
    updated = client.post("/key/update", json={"key": admin_key, "models": ["claude"]}, headers=bearer(MASTER))
    assert updated.status_code == 200, updated.get_data(as_text=True)
    listed = client.get("/v1/models", headers=bearer(admin_key)).get_json()["data"]
    assert [m["id"] for m in listed] == ["claude", "fast"]  # the key is limited for calls...
    # ...but a proxy admin reads every model's facts.
    assert names(client.get("/model_group/info", headers=bearer(admin_key))) == ["gpt-4o", "claude", "emb"]


def test_model_group_info(client):
    resp = client.get("/v1/model_group/info", headers=bearer(MASTER))
    assert names(resp) == ["gpt-4o", "claude", "emb"]
    assert KEY_CANARY not in resp.get_data(as_text=True) and ENV_CANARY not in resp.get_data(as_text=True)
    gpt = client.get("/model_group/info", query_string={"model_group": "gpt-4o"}, headers=bearer(MASTER)).get_json()
    (entry,) = gpt["data"]
    assert entry["providers"] == ["azure", "openai"] and entry["rpm"] == 15 and entry["tpm"] is None
    assert entry["max_input_tokens"] == 128000 and entry["mode"] == "chat"
    missing = client.get("/model_group/info", query_string={"model_group": "fast"}, headers=bearer(MASTER))
    assert missing.status_code == 404  # an alias is no group


def test_routes_lists_every_route_for_admins_only(client):
    resp = client.get("/routes", headers=bearer(MASTER))
    assert resp.status_code == 200
    routes = resp.get_json()["routes"]
    app_rules = {(r.rule, r.endpoint) for r in client.application.url_map.iter_rules() if r.endpoint != "static"}
    assert {(r["path"], r["name"]) for r in routes} == app_rules
    by_path = {r["path"]: r for r in routes}
    assert by_path["/routes"]["methods"] == ["GET"] and by_path["/v2/model/info"]["name"] == "model_info.model_info"
    assert by_path["/chat/completions"]["methods"] == ["POST"]
    assert all(r["methods"] == sorted(r["methods"]) and not {"HEAD", "OPTIONS"} & set(r["methods"]) for r in routes)
    key = key_for(client)
    refused = client.get("/routes", headers=bearer(key))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "master_key_required"
    assert client.get("/routes").status_code == 401
    assert json.dumps(routes).count("/model_group/info") == 2  # with and without /v1


def test_wildcard_entries_are_listed_without_secrets_and_filtered_by_key(tmp_path, monkeypatch):
    """A `*` and an `anthropic/*` entry appear in /model/info and /model_group/info under their own
    model_name (never a model sent upstream), with no key; a key limited to `anthropic/*` sees only
    that entry, and its id picks it out."""
    monkeypatch.setenv("MODELINFO_CANARY", ENV_CANARY)
    settings = from_dict({
        "model_list": [
            {"model_name": "*", "litellm_params": {"model": "openai/*", "api_key": KEY_CANARY}},
            {"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*", "rpm": 7,
                                                             "api_key": "os.environ/MODELINFO_CANARY"},
             "model_info": {"access_groups": ["beta"]}},
            {"model_name": "exact", "litellm_params": {"model": "demo/echo"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": {"master_key": MASTER, "spend_spool_dir": str(tmp_path / "spool")}},
        source="test_model_info", environ=False)
    client = create_app(settings).test_client()
    everything = client.get("/model/info", headers=bearer(MASTER))
    text = everything.get_data(as_text=True)
    assert KEY_CANARY not in text and ENV_CANARY not in text
    by_name = {e["model_name"]: e for e in everything.get_json()["data"]}
    assert set(by_name) == {"*", "anthropic/*", "exact"}
    assert by_name["anthropic/*"]["model_info"]["litellm_provider"] == "anthropic"
    assert by_name["anthropic/*"]["model_info"]["access_groups"] == ["beta"]
    assert by_name["*"]["litellm_params"] == {"model": "openai/*"}
    groups = {e["model_group"]: e for e in client.get("/model_group/info", headers=bearer(MASTER)).get_json()["data"]}
    assert groups["anthropic/*"]["rpm"] == 7 and groups["anthropic/*"]["providers"] == ["anthropic"]

    key = key_for(client, models=["anthropic/*"])
    limited = client.get("/model/info", headers=bearer(key)).get_json()["data"]
    assert [e["model_name"] for e in limited] == ["anthropic/*"]
    wanted = by_name["anthropic/*"]["model_info"]["id"]
    one = client.get(f"/v2/model/info?litellm_model_id={wanted}", headers=bearer(key)).get_json()["data"]
    assert [e["model_name"] for e in one] == ["anthropic/*"]
    hidden = by_name["*"]["model_info"]["id"]
    assert client.get(f"/model/info?litellm_model_id={hidden}", headers=bearer(key)).status_code == 404
