"""LiteLLM's testing and control knobs (gateway/api/controls.py, gateway/providers/mock.py):
`mock_response` answers without the upstream, at $0, with a ledger row, for admins only unless
allowed; a deployment's `mock_response`; the x-litellm-timeout / x-litellm-num-retries headers."""

import json
import time

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict
from tests.fakes.openai_server import FakeOpenAI

MASTER = "sk-master-controls-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
HI = [{"role": "user", "content": "hello there"}]
TEXT = "This is a mock answer, long enough to cross one chunk of sixty-four characters of text."


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as fake:
        yield fake


def make_app(upstream, tmp_path, **general):
    return create_app(from_dict({
        "model_list": [
            {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_base": upstream.url + "/v1",
                                                     "api_key": upstream.api_key}},
            {"model_name": "canned", "litellm_params": {"model": "openai/gpt-4o", "api_base": upstream.url + "/v1",
                                                        "api_key": upstream.api_key, "mock_response": TEXT,
                                                        "mock_timeout": True}},
            {"model_name": "flaky-2", "litellm_params": {"model": "openai/flaky-2",
                                                         "api_base": upstream.url + "/v1",
                                                         "api_key": upstream.api_key}},
            {"model_name": "slow", "litellm_params": {"model": "openai/slow", "api_base": upstream.url + "/v1",
                                                      "api_key": upstream.api_key}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
                             "spend_spool_dir": str(tmp_path / "spool"), **general}}))


@pytest.fixture
def app(upstream, tmp_path):
    return make_app(upstream, tmp_path)


def post(client, body, headers=ADMIN, path="/v1/chat/completions"):
    resp = client.post(path, json=body, headers=headers)
    data = resp.get_data(as_text=True)
    resp.close()
    return resp, data


def virtual_key(client):
    return {"Authorization": "Bearer " + client.post("/key/generate", json={}, headers=ADMIN).get_json()["key"]}


def upstream_calls(upstream):
    return [r for r in upstream.requests if r["path"].endswith("/completions")]


def spend_row(client, request_id):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = client.get("/spend/logs", query_string={"request_id": request_id}, headers=ADMIN).get_json()
        if rows:
            return rows[0]
        time.sleep(0.02)
    pytest.fail(f"no spend row for {request_id}")


def test_the_master_key_gets_a_mock_answer_without_the_upstream_at_zero_cost(app, upstream):
    client = app.test_client()
    upstream.requests.clear()
    resp, data = post(client, {"model": "gpt", "messages": HI, "mock_response": TEXT})
    assert resp.status_code == 200, data
    answer = json.loads(data)
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": TEXT}
    assert answer["usage"]["completion_tokens"] == (len(TEXT) + 3) // 4 and answer["usage"]["prompt_tokens"] > 0
    assert float(resp.headers["x-litellm-response-cost"]) == 0
    assert upstream_calls(upstream) == []
    row = spend_row(client, resp.headers["x-request-id"])
    assert row["status"] == "success" and row["spend"] == 0 and row["completion_tokens"] == (len(TEXT) + 3) // 4


def test_a_mock_stream_carries_the_text_and_usage(app, upstream):
    client = app.test_client()
    upstream.requests.clear()
    resp, data = post(client, {"model": "gpt", "messages": HI, "mock_response": TEXT, "stream": True,
                               "stream_options": {"include_usage": True}})
    assert resp.status_code == 200
    chunks = [json.loads(line[6:]) for line in data.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == TEXT
    assert chunks[-1]["usage"]["completion_tokens"] == (len(TEXT) + 3) // 4
    assert data.rstrip().endswith("data: [DONE]") and upstream_calls(upstream) == []


def test_completions_are_mocked_too_and_embeddings_refused(app):
    client = app.test_client()
    resp, data = post(client, {"model": "gpt", "prompt": "x", "mock_response": "done"}, path="/v1/completions")
    assert resp.status_code == 200 and json.loads(data)["choices"][0]["text"] == "done"
    resp, data = post(client, {"model": "gpt", "input": "x", "mock_response": "done"}, path="/v1/embeddings")
    assert resp.status_code == 400 and json.loads(data)["error"]["param"] == "mock_response"


def test_a_virtual_key_may_not_send_mock_response(app, upstream):
    client = app.test_client()
    key = virtual_key(client)
    upstream.requests.clear()
    resp, data = post(client, {"model": "gpt", "messages": HI, "mock_response": TEXT}, headers=key)
    assert resp.status_code == 403
    error = json.loads(data)["error"]
    assert error["param"] == "mock_response" and error["code"] == "mock_response_not_allowed"
    assert upstream_calls(upstream) == []
    resp, _ = post(client, {"model": "gpt", "messages": HI, "mock_response": None}, headers=key)
    assert resp.status_code == 200  # null is no mock: a real call
    resp, data = post(client, {"model": "gpt", "messages": HI, "mock_response": {"x": 1}})
    assert resp.status_code == 400 and json.loads(data)["error"]["param"] == "mock_response"


def test_allow_mock_response_lets_every_caller(upstream, tmp_path):
    client = make_app(upstream, tmp_path, allow_mock_response=True).test_client()
    resp, data = post(client, {"model": "gpt", "messages": HI, "mock_response": "ok"}, headers=virtual_key(client))
    assert resp.status_code == 200 and json.loads(data)["choices"][0]["message"]["content"] == "ok"


def test_a_deployment_mock_response_answers_for_any_caller_and_sends_nothing(app, upstream):
    client = app.test_client()
    upstream.requests.clear()
    resp, data = post(client, {"model": "canned", "messages": HI}, headers=virtual_key(client))
    assert resp.status_code == 200 and json.loads(data)["choices"][0]["message"]["content"] == TEXT
    assert float(resp.headers["x-litellm-response-cost"]) == 0 and upstream_calls(upstream) == []


def test_a_mock_error_name_raises_that_error(app):
    resp, data = post(app.test_client(), {"model": "gpt", "messages": HI, "mock_response": "litellm.RateLimitError"})
    assert resp.status_code == 429 and "Mock error litellm.RateLimitError" in json.loads(data)["error"]["message"]


def test_a_mock_answer_is_never_served_from_the_cache_to_a_real_call(upstream, tmp_path):
    app = create_app(from_dict({
        "model_list": [{"model_name": "gpt", "litellm_params": {
            "model": "openai/gpt-4o", "api_base": upstream.url + "/v1", "api_key": upstream.api_key}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")}}))
    client = app.test_client()
    assert post(client, {"model": "gpt", "messages": HI, "mock_response": "fake"}, headers={})[0].status_code == 200
    resp, data = post(client, {"model": "gpt", "messages": HI}, headers={})
    assert resp.status_code == 200 and json.loads(data)["choices"][0]["message"]["content"] != "fake"


# -- control headers --------------------------------------------------------------------------------

@pytest.mark.parametrize("header, value", [
    ("x-litellm-timeout", "abc"), ("x-litellm-timeout", "0"), ("x-litellm-timeout", "-3"),
    ("x-litellm-timeout", "nan"), ("x-litellm-timeout", "inf"), ("x-litellm-timeout", ""),
    ("x-litellm-num-retries", "-1"), ("x-litellm-num-retries", "1.5"), ("x-litellm-num-retries", "two"),
    ("x-litellm-num-retries", "100000"),
])
def test_a_bad_control_header_is_a_400_naming_it(app, upstream, header, value):
    upstream.requests.clear()
    resp, data = post(app.test_client(), {"model": "gpt", "messages": HI}, headers={**ADMIN, header: value})
    assert resp.status_code == 400, data
    error = json.loads(data)["error"]
    assert error["param"] == header and header in error["message"]
    assert upstream_calls(upstream) == []


def test_num_retries_header_retries_like_the_body_field(app, upstream):
    client = app.test_client()
    upstream.reset()
    resp, _ = post(client, {"model": "flaky-2", "messages": HI}, headers={**ADMIN, "x-litellm-num-retries": "0"})
    assert resp.status_code >= 500
    upstream.reset()
    resp, _ = post(client, {"model": "flaky-2", "messages": HI, "num_retries": 0},
                   headers={**ADMIN, "x-litellm-num-retries": "2"})
    assert resp.status_code == 200 and resp.headers["x-litellm-attempted-retries"] == "2"


def test_timeout_header_bounds_the_call(app, upstream):
    upstream.slow_seconds = 3.0
    started = time.monotonic()
    resp, data = post(app.test_client(), {"model": "slow", "messages": HI},
                      headers={**ADMIN, "x-litellm-timeout": "0.3"})
    took = time.monotonic() - started
    assert resp.status_code in (408, 504), data
    assert took < 2.5, took
