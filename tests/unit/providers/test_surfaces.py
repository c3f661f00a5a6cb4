"""Images, moderations and rerank: who serves them, their request/answer shapes (rerank in Cohere's
shape from either kind of upstream) and their prices per image, call and search unit."""

import pytest

from gateway import providers
from gateway.config.settings import DeploymentConfig
from gateway.data import image_price
from gateway.providers import rerank
from gateway.routing.balancer import Deployment
from gateway.routing.router import Outcome
from gateway.spend import meter as spend
from gateway.spend.meter import Meter
from tests.unit.spend.test_spend import _Tracker


def make(model, **params):
    params.setdefault("api_key", "sk-x")
    return providers.build(DeploymentConfig(model_name="m", params={"model": model, **params}, model_info={}, index=0))


@pytest.mark.parametrize("model,extra,serves", [
    ("openai/dall-e-3", {}, {"images", "moderations", "rerank"}),
    ("azure/my-dalle", {"api_base": "https://x.openai.azure.com"}, {"images"}),
    ("cohere/rerank-v3.5", {}, {"rerank"}),
    ("hosted_vllm/bge-reranker", {"api_base": "http://127.0.0.1:9/v1"}, {"rerank"}),
    ("groq/llama3-8b-8192", {}, set()),
    ("anthropic/claude-3-5-sonnet-20241022", {}, set()),
])
def test_who_serves_what_and_never_as_a_stream(model, extra, serves):
    provider = make(model, **extra)
    assert {e for e in ("images", "moderations", "rerank") if provider.supports(e, False)} == serves
    assert not any(provider.supports(e, True) for e in ("images", "moderations", "rerank"))


def test_json_bodies_go_as_sent_without_chat_defaults():
    provider = make("openai/dall-e-3", temperature=0.3, max_tokens=9)
    prepared = provider.prepare_body("images", {"model": "m", "prompt": "a cat", "n": 2, "fallbacks": ["x"]})
    assert prepared == {"model": "dall-e-3", "prompt": "a cat", "n": 2}
    assert provider.build_request("images", prepared, False).url == "https://api.openai.com/v1/images/generations"
    azure = make("azure/my-dalle", api_base="https://x.openai.azure.com", api_version="2024-02-01")
    assert azure.urls["images"] == ("https://x.openai.azure.com/openai/deployments/my-dalle/images/generations"
                                    "?api-version=2024-02-01")


def test_cohere_rerank_request_and_answer():
    provider = make("cohere/rerank-v3.5")
    body = {"model": "m", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1, "return_documents": True}
    req = provider.build_request("rerank", provider.prepare_body("rerank", body), False)
    assert req.url == "https://api.cohere.com/v2/rerank"
    import orjson
    assert orjson.loads(req.body) == {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "top_n": 1}
    answer = provider.parse_response("rerank", {"id": "r1", "results": [{"index": 1, "relevance_score": 0.9}],
                                                "meta": {"billed_units": {"search_units": 1}}}, body)
    assert answer == {"id": "r1", "results": [{"index": 1, "relevance_score": 0.9, "document": {"text": "b"}}],
                      "meta": {"billed_units": {"search_units": 1}}}


def test_an_openai_compatible_rerank_answer_in_cohere_shape():
    data = {"id": "x", "model": "bge", "results": [{"index": 0, "relevance_score": 0.5, "document": {"text": "a"}}],
            "usage": {"total_tokens": 12}}
    answer = rerank.from_compatible(data, {"documents": ["a"]})
    assert answer == {"id": "x", "results": [{"index": 0, "relevance_score": 0.5}],
                      "meta": {"billed_units": {"total_tokens": 12}}}
    assert rerank.billed_units(answer) == (0, 12)


# ---- prices --------------------------------------------------------------------------------------

def test_image_prices_by_quality_and_size_and_the_dearest_for_auto():
    dalle3 = Deployment(make("openai/dall-e-3")).unit_prices
    assert image_price(dalle3, "standard", "1024x1024") == 0.04
    assert image_price(dalle3, "hd", "1792x1024") == 0.12
    assert image_price(dalle3, "hd", "auto") == 0.12 and image_price(dalle3, "auto", "1024x1024") == 0.08
    gpt_image = Deployment(make("openai/gpt-image-1")).unit_prices
    assert image_price(gpt_image, "auto", "auto") == 0.25
    flat = Deployment(make("openai/dall-e-3", output_cost_per_image=0.5)).unit_prices
    assert image_price(flat, "hd", "1792x1024") == 0.5
    assert image_price({}, "standard", "1024x1024") is None


def meter(endpoint, body, deployment):
    m = Meter(_Tracker(), "r", None, endpoint, body, False)
    return m, Outcome(group="m", deployment=deployment)


def test_images_are_billed_per_image_returned_and_held_for_n():
    d = Deployment(make("openai/dall-e-3"))
    body = {"prompt": "cats", "n": 3, "quality": "hd", "size": "1024x1792"}
    assert spend.worst_case_cost([d], "images", body) == pytest.approx(3 * 0.12)
    m, outcome = meter("images", body, d)
    assert m.bill_answer(outcome, {"created": 1, "data": [{"url": "u1"}, {"url": "u2"}]}) == pytest.approx(0.24)


def test_moderations_are_free_and_rerank_is_billed_per_search_unit_or_token():
    d = Deployment(make("openai/omni-moderation-latest"))
    m, outcome = meter("moderations", {"input": "x"}, d)
    assert m.bill_answer(outcome, {"results": []}) == 0.0 and d.priced
    cohere = Deployment(make("cohere/rerank-v3.5"))
    body = {"query": "q", "documents": ["d"] * 250}
    assert spend.worst_case_cost([cohere], "rerank", body) == pytest.approx(3 * 0.002)
    m, outcome = meter("rerank", body, cohere)
    assert m.bill_answer(outcome, {"results": [], "meta": {"billed_units": {"search_units": 3}}}) == pytest.approx(0.006)
    vllm = Deployment(make("hosted_vllm/bge", api_base="http://127.0.0.1:9/v1", input_cost_per_token=1e-6,
                           output_cost_per_token=0))
    m, outcome = meter("rerank", body, vllm)
    assert m.bill_answer(outcome, {"results": [], "meta": {"billed_units": {"total_tokens": 500}}}) == pytest.approx(5e-4)
    assert (m.prompt_tokens, m.completion_tokens) == (500, 0)
