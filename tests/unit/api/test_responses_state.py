"""The Responses API's state on the Flask app (demo model): what a failure to store the answer does,
and that a stored response is read back by its owner."""

import time

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict

MASTER = "sk-master-state-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    app = create_app(from_dict({"model_list": [{"model_name": "demo", "litellm_params": {
        "model": "demo/x", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}}],
        "general_settings": {"master_key": MASTER}}))
    return app.test_client(), app.extensions["gateway"]


def spend_row(client, request_id):
    deadline = time.monotonic() + 5
    while not (rows := client.get("/spend/logs", query_string={"request_id": request_id}, headers=AUTH).get_json()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return rows[0]


def test_an_answer_that_cannot_be_stored_is_a_503_and_its_tokens_are_billed_as_an_error(client, monkeypatch):
    http, gateway = client

    def refuse(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(gateway.responses, "save", refuse)
    resp = http.post("/v1/responses", json={"model": "demo", "input": "hello"}, headers=AUTH)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "response_not_stored"
    assert "disk full" not in resp.get_data(as_text=True)
    row = spend_row(http, resp.headers["x-request-id"])
    assert row["status"] == "error" and row["spend"] > 0 and row["call_type"] == "responses"
    ok = http.post("/v1/responses", json={"model": "demo", "input": "hello", "store": False}, headers=AUTH)
    assert ok.status_code == 200  # nothing to store: answered


def test_the_owner_reads_its_response_and_its_input_items_page_by_page(client):
    http, _ = client
    made = http.post("/v1/responses", headers=AUTH, json={"model": "demo", "input": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
        {"role": "user", "content": "three"}]}).get_json()
    got = http.get(f"/v1/responses/{made['id']}", headers=AUTH).get_json()
    assert got == made
    page = http.get(f"/v1/responses/{made['id']}/input_items", query_string={"limit": 2}, headers=AUTH).get_json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["three", "two"] and page["has_more"] is True
    rest = http.get(f"/v1/responses/{made['id']}/input_items", headers=AUTH,
                    query_string={"limit": 2, "after": page["last_id"]}).get_json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["one"] and rest["has_more"] is False
    assert http.get(f"/v1/responses/{made['id']}/input_items", query_string={"order": "sideways"},
                    headers=AUTH).status_code == 400
