"""Issue #11 item 14 through the Flask app, on SQLite and on the real PostgreSQL: bad input to the key
and spend routes is a 400 naming the parameter, never a 500."""

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict
from tests.unit.access.test_keys import db_url  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import new_db_url  # noqa: F401

MASTER = "sk-master-inputs-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def client(db_url, tmp_path):  # noqa: F811
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x"}}],
        "general_settings": {"master_key": MASTER, "database_url": db_url,
                             "spend_spool_dir": str(tmp_path / "spool")},
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")}})
    app = create_app(settings)
    yield app.test_client()
    app.extensions["gateway"].auth.keys.get().db.engine.dispose()


SPEND_QUERIES = [
    ({"model": "\x00"}, "model"),
    ({"model": "gpt\x00-4"}, "model"),
    ({"user_id": "u\x00"}, "user_id"),
    ({"request_id": "\x00"}, "request_id"),
    ({"api_key": "sk-\x00abc"}, "api_key"),
    ({"end_date": "0001-01-01T00:00:00+14:00"}, "end_date"),
    ({"start_date": "0001-01-01T00:00:00+14:00"}, "start_date"),
    ({"end_date": "9999-12-31T23:59:59-14:00"}, "end_date"),
    ({"start_date": "2024-01-01\x00"}, "start_date"),
    ({"team_id": "t\x00"}, "team_id"),
    ({"organization_id": "\x00"}, "organization_id"),
    ({"end_user": "e\x00"}, "end_user"),
    ({"customer_id": "\x00"}, "customer_id"),
    ({"team_id": "t" * 1025}, "team_id"),
]


@pytest.mark.parametrize("query, param", SPEND_QUERIES, ids=[f"{p}-{i}" for i, (_, p) in enumerate(SPEND_QUERIES)])
def test_spend_logs_bad_filters_are_400_naming_the_parameter(client, query, param):
    resp = client.get("/spend/logs", headers=AUTH, query_string=query)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_spend_logs_edge_dates_that_exist_are_served(client):
    for query in ({"start_date": "0001-01-01"}, {"end_date": "9999-12-31"},
                  {"start_date": "0001-01-01T00:00:00+00:00", "end_date": "9999-12-31T23:59:59+00:00"}):
        resp = client.get("/spend/logs", headers=AUTH, query_string=query)
        assert resp.status_code == 200 and resp.get_json() == [], (query, resp.get_data(as_text=True))


KEY_BODIES = [
    ({"rpm_limit": 2**31}, "rpm_limit"),
    ({"tpm_limit": 2**31}, "tpm_limit"),
    ({"max_parallel_requests": 2**40}, "max_parallel_requests"),
    ({"key_alias": "a\x00"}, "key_alias"),
    ({"user_id": "\x00"}, "user_id"),
    ({"team_id": "t\x00"}, "team_id"),
    ({"models": ["\x00"]}, "models"),
    ({"aliases": {"x": "\x00"}}, "aliases"),
    ({"metadata": {"a": "\x00"}}, "metadata"),
    ({"budget_duration": "999999999 seconds"}, "budget_duration"),
    ({"max_budget": -0.01}, "max_budget"),
]


@pytest.mark.parametrize("body, param", KEY_BODIES, ids=[f"{p}-{i}" for i, (_, p) in enumerate(KEY_BODIES)])
def test_key_generate_and_update_bad_values_are_400_naming_the_field(client, body, param):
    resp = client.post("/key/generate", headers=AUTH, json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["param"] == param
    key = client.post("/key/generate", headers=AUTH, json={}).get_json()["key"]
    resp = client.post("/key/update", headers=AUTH, json={"key": key, **body})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["param"] == param
    assert client.get("/key/list", headers=AUTH).status_code == 200


def test_the_largest_limits_are_stored(client):
    limits = {"rpm_limit": 2**31 - 1, "tpm_limit": 2**31 - 1, "max_parallel_requests": 2**31 - 1}
    resp = client.post("/key/generate", headers=AUTH, json=limits)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    info = client.get("/key/info", headers=AUTH, query_string={"key": resp.get_json()["key"]}).get_json()["info"]
    assert {name: info[name] for name in limits} == limits


@pytest.mark.parametrize("depth,param", [(50, "metadata"),  # parses, refused by the key rules
                                         (300, None)])  # refused by the body parser (over 100 deep)
def test_deep_metadata_is_400_and_list_keeps_working(client, depth, param):
    deep = "x"
    for _ in range(depth):
        deep = {"a": deep}
    resp = client.post("/key/generate", headers=AUTH, json={"metadata": deep})
    assert resp.status_code == 400 and resp.get_json()["error"]["param"] == param
    assert client.get("/key/list", headers=AUTH).status_code == 200
