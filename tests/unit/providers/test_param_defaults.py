"""litellm_params as request defaults (gateway/config/params.py): request parameters go upstream,
LiteLLM's own settings (mock_timeout, tags, litellm_credential_name, ...) never do; each key that is
neither read by the gateway nor an OpenAI parameter is logged once at load."""

import logging

import pytest

from gateway.app import create_app
from gateway.config.params import forwarded
from gateway.config.settings import from_dict
from tests.fakes.openai_server import FakeOpenAI

CONTROL = {"mock_timeout": True, "use_in_pass_through": False, "litellm_credential_name": "default_azure",
           "tags": ["free"], "model_info": {"id": "x"}, "input_cost_per_token_above_128k_tokens": 0.1,
           "max_budget": 10, "budget_duration": "1d", "litellm_trace_id": "t", "mock_delay": 1,
           "access_groups": ["beta"], "merge_reasoning_content_in_choices": True, "additional_drop_params": ["x"],
           "vertex_ai_location": "us", "aws_bedrock_extra": 1}
REQUEST = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 77, "stop": ["\n\n"], "seed": 5, "top_k": 40,
           "repetition_penalty": 1.1}


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as fake:
        yield fake


def config(upstream, **params):
    return {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "openai/gpt-4o", "api_base": upstream.url + "/v1", "api_key": upstream.api_key, **params}}]}


@pytest.mark.parametrize("key", sorted(CONTROL))
def test_litellm_settings_are_never_request_parameters(key):
    assert not forwarded(key)


@pytest.mark.parametrize("key", sorted(REQUEST))
def test_request_parameters_are(key):
    assert forwarded(key)


def test_the_upstream_gets_request_parameters_and_no_control_keys(upstream):
    client = create_app(from_dict(config(upstream, **CONTROL, **REQUEST))).test_client()
    upstream.requests.clear()
    resp = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    resp.close()
    sent = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")][-1]
    for key, value in REQUEST.items():
        assert sent[key] == value
    assert not set(CONTROL) & set(sent), sorted(set(CONTROL) & set(sent))


def test_each_unknown_key_is_logged_once_at_load_saying_where_it_goes(upstream, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.config.params")
    raw = config(upstream, mock_timeout=True, repetition_penalty=1.1, temperature=0.1)
    raw["model_list"].append({"model_name": "n", "litellm_params": {"model": "demo/x", "mock_timeout": True}})
    from_dict(raw)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("litellm_params.mock_timeout (model_list[0], model_list[1])" in m and "never sent upstream" in m
               for m in messages) == 1
    assert sum("litellm_params.repetition_penalty (model_list[0])" in m and "sent upstream as a default" in m
               for m in messages) == 1
    assert not any("temperature" in m or ".model " in m or "api_key" in m for m in messages)
