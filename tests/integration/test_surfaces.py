"""Images, moderations and rerank on the gateway (a real gunicorn + gevent process): rerank from Cohere
(checked with the `cohere` SDK against the gateway) and from an OpenAI-compatible rerank server,
images and moderations with the `openai` SDK; each billed by its unit in the spend ledger."""

import time

import cohere
import openai
import pytest
import requests

from tests.fakes.cohere_server import FakeCohere
from tests.integration.conftest import admin_call
from tests.integration.conftest import config_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-master-surfaces-0123456789"
DOCS = ["Carson City is the capital city of Nevada.", "The Commonwealth of the Northern Mariana Islands.",
        "Washington, D.C. is the capital of the United States.", "Capital punishment in the United States."]
QUERY = "What is the capital of the United States?"


@pytest.fixture(scope="module")
def fake_cohere():
    with FakeCohere() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake_cohere, fake_openai, tmp_path_factory):
    models = [
        {"model_name": "cohere-rerank", "litellm_params": {"model": "cohere/rerank-v3.5", "api_base": fake_cohere.url,
                                                           "api_key": fake_cohere.api_key}},
        {"model_name": "bge-rerank", "litellm_params": {"model": "hosted_vllm/bge-reranker-v2-m3",
                                                        "api_base": fake_cohere.url + "/compat/v1",
                                                        "api_key": fake_cohere.api_key,
                                                        "input_cost_per_token": 1e-6, "output_cost_per_token": 0}},
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake_openai.url + "/v1",
                                                 "api_key": fake_openai.api_key}},
    ]
    gw = config_gateway(tmp_path_factory.mktemp("gw-surfaces"),
                        {"model_list": models, "general_settings": {"master_key": MASTER}})
    yield gw
    gw.stop()


def ledger_row(gateway, request_id, timeout=10):
    deadline = time.monotonic() + timeout
    while not (rows := admin_call(gateway, MASTER, "GET", "/spend/logs", params={"request_id": request_id})):
        assert time.monotonic() < deadline, f"no spend row for {request_id}"
        time.sleep(0.05)
    return rows[0]


def test_the_cohere_sdk_reranks_through_the_gateway(gateway, fake_cohere):
    client = cohere.ClientV2(api_key=MASTER, base_url=gateway.url, timeout=20)
    answer = client.rerank(model="cohere-rerank", query=QUERY, documents=DOCS, top_n=2)
    assert len(answer.results) == 2 and answer.results[0].index == 2
    assert answer.results[0].relevance_score >= answer.results[1].relevance_score
    sent = fake_cohere.requests[-1]
    assert sent["path"] == "/v2/rerank" and sent["json"] == {"model": "rerank-v3.5", "query": QUERY,
                                                             "documents": DOCS, "top_n": 2}
    assert answer.meta.billed_units.search_units == 1


def test_rerank_is_billed_per_search_unit_or_by_tokens(gateway):
    for model, expected in (("cohere-rerank", lambda answer: 0.002),
                            ("bge-rerank", lambda answer: answer["meta"]["billed_units"]["total_tokens"] * 1e-6)):
        resp = requests.post(gateway.url + "/v1/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                             json={"model": model, "query": QUERY, "documents": DOCS, "return_documents": True})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["results"][0]["document"] == {"text": DOCS[answer["results"][0]["index"]]}
        assert float(resp.headers["x-litellm-response-cost"]) == pytest.approx(expected(answer))
        row = ledger_row(gateway, resp.headers["x-request-id"])
        assert (row["call_type"], row["status"]) == ("rerank", "success")
        assert row["spend"] == pytest.approx(expected(answer))


def test_an_upstream_rerank_error_and_a_provider_without_rerank(gateway):
    resp = requests.post(gateway.url + "/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "gpt-missing", "query": "q", "documents": ["a"]})
    assert resp.status_code == 404
    resp = requests.post(gateway.url + "/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "cohere-rerank", "query": "q", "documents": []})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "documents"
    resp = requests.post(gateway.url + "/v1/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "cohere-rerank", "query": "q", "documents": ["a"], "stream": True})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "stream"
