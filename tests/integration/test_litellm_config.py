"""LiteLLM proxy config files start unchanged (issue #14 items 6 and 7): a config in the shape of
LiteLLM's own proxy CI config (every callback name LiteLLM documents, `mock_*` params, its
litellm_settings / router_settings / general_settings keys, wildcard deployments) starts a real
gunicorn gateway that serves; with the `prometheus` callback, /metrics carries LiteLLM's metric names,
parsed by prometheus_client, whose values agree with our own series."""

import collections
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.callbacks import LITELLM_NAMES
from gateway.telemetry.litellm_metrics import FAMILIES

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
AUTH = {"Authorization": f"Bearer {MASTER}"}
HI = [{"role": "user", "content": "what llm are you"}]
MOCK_TEXT = "This is a mock request"


def litellm_ci_config(fake, tmp_path):
    """The shape of LiteLLM's proxy_server_config.yaml, its upstreams pointed at the fake."""
    base = fake.url + "/v1"
    return {
        "model_list": [
            {"model_name": "gpt-3.5-turbo-end-user-test",
             "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": base, "api_key": fake.api_key,
                                "region_name": "eu"},
             "model_info": {"id": "1"}},
            {"model_name": "gpt-3.5-turbo",
             "litellm_params": {"model": "azure/chatgpt-v-2", "api_base": fake.url, "api_version": "2023-05-15",
                                "api_key": "os.environ/AZURE_API_KEY"}},
            {"model_name": "gpt-3.5-turbo-large",
             "litellm_params": {"model": "openai/gpt-3.5-turbo-1106", "api_base": base, "api_key": fake.api_key,
                                "rpm": 480, "timeout": 300, "stream_timeout": 60}},
            {"model_name": "fake-openai-endpoint",
             "litellm_params": {"model": "openai/fake", "api_key": fake.api_key, "api_base": base}},
            {"model_name": "fake-openai-endpoint-3",
             "litellm_params": {"model": "openai/my-fake-model", "api_key": fake.api_key, "api_base": base,
                                "stream_timeout": 5, "rpm": 1000}},
            {"model_name": "fake-openai-endpoint-3",
             "litellm_params": {"model": "openai/my-fake-model-2", "api_key": fake.api_key, "api_base": base,
                                "stream_timeout": 5, "rpm": 1000}},
            {"model_name": "bad-model",
             "litellm_params": {"model": "openai/bad-model", "api_key": fake.api_key, "api_base": base,
                                "mock_timeout": True, "timeout": 60, "rpm": 1000, "use_in_pass_through": False,
                                "litellm_credential_name": "default", "tags": ["ci"]},
             "model_info": {"health_check_timeout": 1}},
            {"model_name": "mock-model",
             "litellm_params": {"model": "openai/gpt-4o", "api_key": fake.api_key, "api_base": base,
                                "mock_response": MOCK_TEXT}},
            {"model_name": "*", "litellm_params": {"model": "openai/*", "api_key": "os.environ/OPENAI_API_KEY"}},
            {"model_name": "anthropic/*",
             "litellm_params": {"model": "anthropic/*", "api_key": "os.environ/ANTHROPIC_API_KEY"}},
            {"model_name": "groq/*", "litellm_params": {"model": "groq/*", "api_key": "os.environ/GROQ_API_KEY"}},
            {"model_name": "gpt-instruct",
             "litellm_params": {"model": "text-completion-openai/gpt-3.5-turbo-instruct", "api_base": base,
                                "api_key": fake.api_key}},
        ],
        "litellm_settings": {
            "drop_params": True, "num_retries": 5, "request_timeout": 600, "telemetry": False,
            "context_window_fallbacks": [{"gpt-3.5-turbo": ["gpt-3.5-turbo-large"]}],
            "default_team_settings": [{"team_id": "team-1", "success_callback": ["langfuse"],
                                       "failure_callback": ["langfuse"]}],
            "success_callback": sorted(LITELLM_NAMES) + ["prometheus"],
            "failure_callback": ["prometheus", "sentry", "slack"],
            "callbacks": ["prometheus", "custom_callbacks.proxy_handler_instance", "otel_custom_logger"],
            "service_callback": ["prometheus_system"],
        },
        "finetune_settings": [{"custom_llm_provider": "openai", "api_key": "os.environ/OPENAI_API_KEY"}],
        "files_settings": [{"custom_llm_provider": "openai", "api_key": "os.environ/OPENAI_API_KEY"}],
        "router_settings": {
            "routing_strategy": "usage-based-routing-v2", "redis_host": "os.environ/REDIS_HOST",
            "redis_password": "os.environ/REDIS_PASSWORD", "redis_port": "os.environ/REDIS_PORT",
            "enable_pre_call_checks": True,
            "model_group_alias": {"my-special-fake-model-alias-name": "fake-openai-endpoint-3"},
        },
        "general_settings": {
            "master_key": MASTER, "store_model_in_db": True, "proxy_budget_rescheduler_min_time": 60,
            "proxy_budget_rescheduler_max_time": 64, "proxy_batch_write_at": 1,
            "database_connection_pool_limit": 10,
            "pass_through_endpoints": [{"path": "/v1/rerank", "target": "https://api.cohere.com/v1/rerank",
                                        "forward_headers": True}],
            "spend_spool_dir": str(tmp_path / "spool"),
        },
    }


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams, name, sample=None, **labels):
    family = fams.get(name)
    return sum(s.value for s in (family.samples if family else ())
               if (sample is None or s.name == sample) and set(labels.items()) <= set(s.labels.items()))


def chat(gw, model, **body):
    return requests.post(gw.url + "/v1/chat/completions", json={"model": model, "messages": HI, **body},
                         headers=AUTH, timeout=30)


def test_litellm_ci_config_starts_and_serves(start_gateway, fake_openai, tmp_path):
    env = {"AZURE_API_KEY": fake_openai.azure_key, "OPENAI_API_KEY": fake_openai.api_key,
           "OPENAI_API_BASE": fake_openai.url + "/v1",  # where the `*` wildcard's OpenAI calls go
           "ANTHROPIC_API_KEY": "sk-ant-ci-0000", "GROQ_API_KEY": "gsk-ci-0000", "REDIS_HOST": "127.0.0.1",
           "REDIS_PORT": "6379", "REDIS_PASSWORD": ""}
    gw = start_gateway(litellm_ci_config(fake_openai, tmp_path), args=["--num_workers", "2"], env=env)
    fake_openai.requests.clear()
    for model in ("gpt-3.5-turbo-end-user-test", "gpt-3.5-turbo", "fake-openai-endpoint", "bad-model",
                  "my-special-fake-model-alias-name"):
        resp = chat(gw, model)
        assert resp.status_code == 200, (model, resp.text[:300])
    resp = chat(gw, "gpt-4o-mini-ci")  # no entry has this name: the `*` wildcard serves it
    assert resp.status_code == 200 and resp.headers["x-litellm-model-group"] == "gpt-4o-mini-ci", resp.text[:300]
    resp = chat(gw, "mock-model")
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == MOCK_TEXT
    assert float(resp.headers["x-litellm-response-cost"]) == 0
    resp = chat(gw, "fake-openai-endpoint", stream=True)
    assert resp.status_code == 200 and "data: [DONE]" in resp.text
    resp = requests.post(gw.url + "/v1/completions", json={"model": "gpt-instruct", "prompt": "hi"},
                         headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    bodies = [r["json"] for r in fake_openai.requests if isinstance(r.get("json"), dict)]
    assert {b.get("model") for b in bodies} >= {"fake", "bad-model", "gpt-3.5-turbo", "gpt-4o-mini-ci"}
    assert not any(b.get("model") == "*" for b in bodies)
    for b in bodies:  # LiteLLM's own settings never reach an upstream
        assert not {"mock_timeout", "mock_response", "use_in_pass_through", "litellm_credential_name", "tags",
                    "region_name"} & set(b), b
    assert not any(b.get("model") == "gpt-4o" for b in bodies)  # the mock deployment sent nothing
    text = requests.get(gw.url + "/metrics", headers=AUTH, timeout=10).text
    assert {f.name for f in FAMILIES} <= set(families(text))
    log = gw.log()
    assert "the LiteLLM callback 'langsmith' is not implemented" in log
    assert log.count("the LiteLLM callback 'langsmith' is not implemented") == 1
    assert "custom callbacks are never imported" in log
    assert "litellm_params.mock_timeout (model_list[6]) is a LiteLLM setting" in log


def test_litellm_metric_names_agree_with_our_series(start_gateway, fake_openai, tmp_path):
    models = [{"model_name": "gpt", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_key": fake_openai.api_key,
                                                       "api_base": fake_openai.url + "/v1", "rpm": 100,
                                                       "tpm": 100000}},
              {"model_name": "fail-500", "litellm_params": {"model": "openai/fail-500",
                                                            "api_key": fake_openai.api_key,
                                                            "api_base": fake_openai.url + "/v1"}}]
    config = {"model_list": models, "litellm_settings": {"success_callback": ["prometheus"],
                                                          "failure_callback": ["prometheus"]},
              "general_settings": {"master_key": MASTER, "spend_spool_dir": str(tmp_path / "spool")}}
    gw = start_gateway(config, args=["--num_workers", "2"])
    sent = collections.Counter()
    for i in range(6):
        resp = chat(gw, "gpt", stream=bool(i % 2))
        sent[str(resp.status_code)] += 1
        assert resp.status_code == 200
        resp.close()
    for _ in range(2):
        resp = chat(gw, "fail-500")
        sent[str(resp.status_code)] += 1
        assert resp.status_code == 500
    deadline = time.monotonic() + 15
    while True:  # observers run after each response: wait until every call is counted
        fams = families(requests.get(gw.url + "/metrics", headers=AUTH, timeout=10).text)
        if total(fams, "gateway_requests") == 8:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert total(fams, "litellm_requests_metric") == 8
    for code, count in sent.items():
        assert total(fams, "litellm_proxy_total_requests_metric", status_code=code) == count
    assert total(fams, "litellm_proxy_failed_requests_metric", requested_model="fail-500",
                 exception_status="500") == 2
    assert total(fams, "litellm_deployment_success_responses", requested_model="gpt",
                 litellm_model_name="openai/gpt-3.5-turbo", api_provider="openai",
                 api_base=fake_openai.url + "/v1") == 6
    assert total(fams, "litellm_deployment_failure_responses", requested_model="fail-500") == \
        total(fams, "gateway_upstream_errors", model_group="fail-500") == 2
    assert total(fams, "litellm_input_tokens", requested_model="gpt") == total(fams, "gateway_prompt_tokens") > 0
    assert total(fams, "litellm_output_tokens_metric") == total(fams, "gateway_completion_tokens") > 0
    assert total(fams, "litellm_spend_metric") == pytest.approx(total(fams, "gateway_spend_usd"))
    assert total(fams, "litellm_spend_metric") > 0
    assert total(fams, "litellm_request_total_latency_metric", "litellm_request_total_latency_metric_count") == 8
    assert total(fams, "litellm_llm_api_time_to_first_token_metric",
                 "litellm_llm_api_time_to_first_token_metric_count") == 3
    assert total(fams, "litellm_deployment_state", litellm_model_name="openai/gpt-3.5-turbo") == 0
    assert total(fams, "litellm_remaining_requests_metric", model_group="gpt") == 100 - 6
    assert total(fams, "litellm_remaining_tokens_metric", model_group="gpt") == \
        100000 - total(fams, "litellm_total_tokens", requested_model="gpt")
    text = requests.get(gw.url + "/metrics", headers=AUTH, timeout=10).text
    assert MASTER not in text and fake_openai.api_key not in text
