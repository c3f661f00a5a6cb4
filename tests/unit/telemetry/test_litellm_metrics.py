"""LiteLLM's metric names on /metrics (gateway/telemetry/litellm_metrics.py): on only with the
`prometheus` callback, LiteLLM's label names, values regrouped from our own series at scrape time."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config.settings import from_dict
from gateway.telemetry.litellm_metrics import FAMILIES

HI = [{"role": "user", "content": "hello litellm names"}]
KEY_LABELS = ("end_user", "hashed_api_key", "api_key_alias", "team", "team_alias", "user")


def app_for(tmp_path, **litellm):
    return create_app(from_dict({
        "model_list": [{"model_name": "pair", "litellm_params": {"model": "demo/a", "rpm": 50, "tpm": 100000}},
                       {"model_name": "pair", "litellm_params": {"model": "demo/b"}},
                       {"model_name": "solo", "litellm_params": {"model": "demo/c"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "litellm_settings": litellm}))


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams, name, sample=None, **labels):
    return sum(s.value for s in fams[name].samples
               if (sample is None or s.name == sample) and set(labels.items()) <= set(s.labels.items()))


def run_calls(client):
    for model in ("pair", "pair", "solo"):
        resp = client.post("/v1/chat/completions", json={"model": model, "messages": HI})
        assert resp.status_code == 200
        resp.close()
    resp = client.post("/v1/chat/completions", json={"model": "solo", "messages": HI, "stream": True})
    assert resp.status_code == 200 and b"[DONE]" in resp.get_data()
    resp.close()
    resp = client.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
    assert resp.status_code == 404
    resp.close()


def test_without_the_prometheus_callback_only_our_names(tmp_path):
    client = app_for(tmp_path).test_client()
    run_calls(client)
    assert not [n for n in families(client.get("/metrics").get_data(as_text=True)) if n.startswith("litellm_")]


@pytest.mark.parametrize("key", ["success_callback", "failure_callback", "callbacks"])
def test_litellm_families_with_their_label_names_and_our_values(tmp_path, key):
    app = app_for(tmp_path, **{key: ["prometheus"]})
    client = app.test_client()
    group = app.extensions["gateway"].router.groups["pair"]
    first = group.deployments[0]
    group.cool_down(group.deployments[1], "test")  # the pair's calls go to the first, with its limits
    run_calls(client)
    fams = families(client.get("/metrics").get_data(as_text=True))
    for family in FAMILIES:
        assert fams[family.name].type == family.kind, family.name
        for sample in fams[family.name].samples:
            assert set(sample.labels) - {"le"} == set(family.labels), family.name
            assert all(sample.labels[k] == "" for k in KEY_LABELS if k in sample.labels)
    assert total(fams, "litellm_requests_metric") == total(fams, "gateway_requests") == 5
    assert total(fams, "litellm_proxy_total_requests_metric", status_code="200") == 4
    assert total(fams, "litellm_proxy_failed_requests_metric") == 1
    assert total(fams, "litellm_proxy_failed_requests_metric", exception_status="404",
                 requested_model="(unknown)") == 1
    prompt = total(fams, "gateway_prompt_tokens")
    completion = total(fams, "gateway_completion_tokens")
    assert prompt > 0 and completion > 0
    for name, expected in (("litellm_input_tokens", prompt), ("litellm_output_tokens", completion),
                           ("litellm_total_tokens", prompt + completion)):
        assert total(fams, name) == expected and total(fams, name + "_metric") == expected
    assert total(fams, "litellm_input_tokens", requested_model="solo", model="demo/c") > 0
    assert total(fams, "litellm_spend_metric") == total(fams, "gateway_spend_usd")
    assert total(fams, "litellm_request_total_latency_metric", "litellm_request_total_latency_metric_count") == 5
    assert total(fams, "litellm_llm_api_latency_metric", "litellm_llm_api_latency_metric_count") == 5
    assert total(fams, "litellm_llm_api_time_to_first_token_metric",
                 "litellm_llm_api_time_to_first_token_metric_count", model="demo/c") == 1
    assert total(fams, "litellm_deployment_success_responses") == 4
    assert total(fams, "litellm_deployment_success_responses", requested_model="pair", api_provider="demo") == 2
    assert total(fams, "litellm_deployment_total_requests") == 4
    assert total(fams, "litellm_deployment_state", model_id=group.deployments[1].id) == 2
    assert total(fams, "litellm_deployment_state", model_id=first.id) == 0
    assert total(fams, "litellm_deployment_state", litellm_model_name="demo/c") == 0
    assert total(fams, "litellm_deployment_success_responses", model_id=first.id) == 2
    rows = fams["litellm_remaining_requests_metric"].samples
    assert [s.labels["litellm_model_name"] for s in rows] == ["demo/a"]  # only the deployment with an rpm
    assert rows[0].labels["model_group"] == "pair"
    assert rows[0].value == 50 - total(fams, "litellm_deployment_success_responses", model_id=first.id)
    tokens = fams["litellm_remaining_tokens_metric"].samples
    assert [s.labels["litellm_model_name"] for s in tokens] == ["demo/a"]
    assert tokens[0].value == 100000 - total(fams, "litellm_total_tokens", model="demo/a")
