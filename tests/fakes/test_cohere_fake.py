"""Check the fake Cohere upstream with the official `cohere` SDK (ClientV2, and Client for v1 rerank).

If the SDK parses the fake's answers and streams and raises its typed errors, the fake is faithful
enough for the gateway's Cohere tests to rely on it. The OpenAI-compatible rerank route (vLLM / Jina
shape) has no SDK here: it is checked with plain `requests` and exact shape assertions.
"""

import json

import cohere
import httpx
import pytest
import requests
from cohere.core.api_error import ApiError

from tests.fakes.cohere_server import ANSWER_PREFIX
from tests.fakes.cohere_server import TOOL_PREFIX
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.cohere_server import fake_embedding

KEY = "co-fake-sdk-key-0123456789"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeCohere(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def co(fake):
    return cohere.ClientV2(api_key=KEY, base_url=fake.url, timeout=5)


@pytest.fixture(scope="module")
def co1(fake):
    """The v1 client: its `rerank` posts to /v1/rerank."""
    return cohere.Client(api_key=KEY, base_url=fake.url, timeout=5)


def user(text):
    return [{"role": "user", "content": text}]


def test_chat(co, fake):
    resp = co.chat(model="command-r-plus", messages=[{"role": "system", "content": "be brief"}, *user("hi there")],
                   temperature=0.2, p=0.5, max_tokens=50)
    assert resp.finish_reason == "COMPLETE"
    assert resp.message.role == "assistant"
    assert resp.message.content[0].type == "text"
    assert resp.message.content[0].text == ANSWER_PREFIX + "hi there"
    assert (resp.usage.tokens.input_tokens, resp.usage.tokens.output_tokens) == (4, 6)
    assert resp.usage.billed_units.input_tokens == 4
    sent = fake.requests[-1]
    assert sent["path"] == "/v2/chat"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["p"] == 0.5


def test_chat_limits_and_json_mode(co):
    cut = co.chat(model="command-r", messages=user("one two three four"), max_tokens=3)
    assert cut.finish_reason == "MAX_TOKENS" and cut.message.content[0].text == "Hello from fake"
    stopped = co.chat(model="command-r", messages=user("alpha beta"), stop_sequences=["beta"])
    assert stopped.finish_reason == "STOP_SEQUENCE" and stopped.message.content[0].text == ANSWER_PREFIX + "alpha "
    as_json = co.chat(model="command-r", messages=user("x"), response_format={"type": "json_object"})
    assert json.loads(as_json.message.content[0].text) == {"answer": ANSWER_PREFIX + "x"}


def test_chat_stream(co):
    events = list(co.chat_stream(model="command-r", messages=user("stream me please")))
    kinds = [e.type for e in events]
    assert kinds[0] == "message-start" and kinds[1] == "content-start"
    assert kinds[-2:] == ["content-end", "message-end"]
    assert events[0].id
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert text == ANSWER_PREFIX + "stream me please"
    assert kinds.count("content-delta") > 3
    end = events[-1]
    assert end.delta.finish_reason == "COMPLETE"
    assert end.delta.usage.tokens.output_tokens == 7


def test_stream_uses_event_lines(fake):
    resp = httpx.post(fake.url + "/v2/chat", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "command-r", "messages": user("hi"), "stream": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in resp.text.split("\n\n") if b.strip()]
    first_line, data_line = blocks[0].split("\n")
    assert first_line == "event: message-start"
    assert json.loads(data_line[len("data: "):])["type"] == "message-start"


def test_tool_call_and_result(co):
    resp = co.chat(model="command-r-plus", messages=user("What's the weather in Madrid and Tokyo?"), tools=TOOLS)
    assert resp.finish_reason == "TOOL_CALL"
    assert resp.message.tool_plan
    calls = resp.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"location": "Madrid"}, {"location": "Tokyo"}]
    messages = [*user("What's the weather in Madrid?"),
                {"role": "assistant", "tool_plan": resp.message.tool_plan, "tool_calls": [calls[0]]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": "24C"}'}]
    final = co.chat(model="command-r-plus", messages=messages, tools=TOOLS)
    assert final.finish_reason == "COMPLETE"
    assert final.message.content[0].text == TOOL_PREFIX + '{"temp": "24C"}'


def test_tool_stream(co):
    events = list(co.chat_stream(model="command-r-plus", messages=user("weather in Paris?"), tools=TOOLS))
    kinds = [e.type for e in events]
    assert "tool-plan-delta" in kinds
    start = next(e for e in events if e.type == "tool-call-start")
    assert start.delta.message.tool_calls.function.name == "get_weather"
    args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
    assert json.loads(args) == {"location": "Paris"}
    assert kinds.count("tool-call-delta") > 1
    assert events[-1].delta.finish_reason == "TOOL_CALL"


def test_images_only_for_vision_models(co, fake):
    parts = [{"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    resp = co.chat(model="command-a-vision-07-2025", messages=[{"role": "user", "content": parts}])
    assert resp.message.content[0].text == ANSWER_PREFIX + "what is this [images: 1]"
    with pytest.raises(cohere.BadRequestError) as info:
        co.chat(model="command-r", messages=[{"role": "user", "content": parts}])
    assert "image" in info.value.body["message"]


def test_embed(co):
    resp = co.embed(model="embed-english-v3.0", texts=["hello", "world"], input_type="search_document",
                    embedding_types=["float"], output_dimension=4)
    assert resp.embeddings.float_ == [fake_embedding("hello", 4), fake_embedding("world", 4)]
    assert resp.meta.billed_units.input_tokens == 2
    assert resp.texts == ["hello", "world"]


def test_embed_needs_input_type(fake):
    resp = httpx.post(fake.url + "/v2/embed", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "embed-english-v3.0", "texts": ["a"]})
    assert resp.status_code == 400 and "input_type" in resp.json()["message"]


@pytest.mark.parametrize("model, exc, status", [
    ("fail-400", cohere.BadRequestError, 400),
    ("context-length", cohere.BadRequestError, 400),
    ("fail-401", cohere.UnauthorizedError, 401),
    ("fail-404", cohere.NotFoundError, 404),
    ("fail-422", cohere.UnprocessableEntityError, 422),
    ("fail-429", cohere.TooManyRequestsError, 429),
    ("fail-498", cohere.InvalidTokenError, 498),
    ("fail-499", cohere.ClientClosedRequestError, 499),
    ("fail-500", cohere.InternalServerError, 500),
    ("fail-402", ApiError, 402),
])
def test_typed_errors(co, model, exc, status):
    with pytest.raises(exc) as info:
        co.chat(model=model, messages=user("hi"), request_options={"max_retries": 0})
    assert info.value.status_code == status
    assert info.value.body["message"]


def test_rate_limit_has_retry_after(fake):
    resp = httpx.post(fake.url + "/v2/chat", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "fail-429", "messages": user("hi")})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"


def test_wrong_key_and_unknown_fields(fake, co):
    with pytest.raises(cohere.UnauthorizedError):
        cohere.ClientV2(api_key="co-wrong", base_url=fake.url, timeout=5).chat(model="command-r", messages=user("x"))
    resp = httpx.post(fake.url + "/v2/chat", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "command-r", "messages": user("x"), "top_p": 0.5})
    assert resp.status_code == 400 and "top_p" in resp.json()["message"]


def test_stream_error_ends_with_error_finish(co):
    events = list(co.chat_stream(model="stream-error", messages=user("hi")))
    assert events[-1].delta.finish_reason == "ERROR"
    assert events[-1].delta.error


# ---- rerank (Cohere v2 / v1) ----------------------------------------------------------------------

QUERY = "Capital of France?"
DOCS = ["Paris is the capital of France.",    # capital, of, france: 3/3
        "Berlin is the capital of Germany.",  # capital, of: 2/3
        "France is known for wine.",          # france: 1/3
        "Bananas are yellow.",                # 0/3
        "The capital of Spain is Madrid."]    # capital, of: 2/3, ties with 1 and comes after it
RANKED = [(0, 1.0), (1, 2 / 3), (4, 2 / 3), (2, 1 / 3), (3, 0.0)]
NO_RETRY = {"max_retries": 0}


def pairs(results):
    return [(r.index, r.relevance_score) for r in results]


def test_rerank_v2(co, fake):
    resp = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert pairs(resp.results) == RANKED
    assert resp.id
    assert resp.meta.api_version.version == "2"
    assert resp.meta.billed_units.search_units == 1
    sent = fake.requests[-1]
    assert (sent["method"], sent["path"]) == ("POST", "/v2/rerank")
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"] == {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}


def test_rerank_v2_wire_shape(fake):
    resp = requests.post(fake.url + "/v2/rerank", headers={"Authorization": f"Bearer {KEY}"}, timeout=5,
                         json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"id", "results", "meta"}
    assert body["results"] == [{"index": 0, "relevance_score": 1.0}, {"index": 1, "relevance_score": 2 / 3}]
    assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}


def test_rerank_v2_top_n_and_max_tokens_per_doc(co, fake):
    assert pairs(co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3).results) == RANKED[:3]
    assert pairs(co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=50).results) == RANKED
    # Documents cut to 4 words before scoring: "Paris is the capital" keeps 1 of 3 terms, "The capital of
    # Spain" 2 of 3, so document 4 now leads.
    cut = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=4)
    assert pairs(cut.results) == [(4, 2 / 3), (0, 1 / 3), (1, 1 / 3), (2, 1 / 3), (3, 0.0)]
    assert fake.requests[-1]["json"]["max_tokens_per_doc"] == 4


@pytest.mark.parametrize("n, units", [(1, 1), (100, 1), (101, 2), (250, 3), (1000, 10)])
def test_rerank_search_units(co, n, units):
    resp = co.rerank(model="rerank-v3.5", query="doc", documents=[f"doc {i}" for i in range(n)], top_n=1)
    assert resp.meta.billed_units.search_units == units
    assert pairs(resp.results) == [(0, 1.0)]


def test_rerank_v1_return_documents(co1, fake):
    bare = co1.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, top_n=2)
    assert pairs(bare.results) == RANKED[:2]
    assert [r.document for r in bare.results] == [None, None]
    assert bare.meta.api_version.version == "1" and bare.meta.billed_units.search_units == 1
    full = co1.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [(r.index, r.document.text) for r in full.results] == [(0, DOCS[0]), (1, DOCS[1])]
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/rerank" and sent["json"]["return_documents"] is True


def test_rerank_v1_leaves_document_out(fake):
    resp = requests.post(fake.url + "/v1/rerank", headers={"Authorization": f"Bearer {KEY}"}, timeout=5,
                         json={"model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS[:2]})
    assert resp.json()["results"] == [{"index": 0, "relevance_score": 1.0}, {"index": 1, "relevance_score": 2 / 3}]


def test_rerank_v1_objects_and_rank_fields(co1):
    docs = [{"text": "Bananas are yellow.", "title": "Capital of France", "id": "a"},
            {"text": "Paris is the capital of France.", "title": "Fruit", "id": "b"}]
    by_text = co1.rerank(model="rerank-english-v3.0", query=QUERY, documents=docs, return_documents=True)
    assert pairs(by_text.results) == [(1, 1.0), (0, 0.0)]
    assert by_text.results[0].document.text == docs[1]["text"]
    assert by_text.results[0].document.id == "b"  # other fields come back as sent
    by_title = co1.rerank(model="rerank-english-v3.0", query=QUERY, documents=docs, rank_fields=["title"])
    assert pairs(by_title.results) == [(0, 1.0), (1, 0.0)]
    with pytest.raises(cohere.BadRequestError) as info:
        co1.rerank(model="rerank-english-v3.0", query=QUERY, documents=docs, rank_fields=["author"],
                   request_options=NO_RETRY)
    assert "author" in info.value.body["message"]


@pytest.mark.parametrize("kwargs, words", [
    ({"query": "", "documents": DOCS}, "query"),
    ({"query": QUERY, "documents": []}, "list of documents must not be empty"),
    ({"query": QUERY, "documents": ["x"] * 1001}, "too many documents"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
    ({"query": QUERY, "documents": DOCS, "top_n": -2}, "top_n"),
])
def test_rerank_validation_sdk(co, co1, kwargs, words):
    for call in (co.rerank, co1.rerank):
        with pytest.raises(cohere.BadRequestError) as info:
            call(model="rerank-v3.5", **kwargs, request_options=NO_RETRY)
        assert info.value.status_code == 400
        assert words in info.value.body["message"]
        assert info.value.body["id"]


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank"])
@pytest.mark.parametrize("body, words", [
    ({"model": "rerank-v3.5", "documents": DOCS}, "query must be provided"),
    ({"model": "rerank-v3.5", "query": QUERY}, "list of documents must not be empty"),
    ({"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": "2"}, "top_n"),
])
def test_rerank_validation_wire(fake, path, body, words):
    resp = requests.post(fake.url + path, headers={"Authorization": f"Bearer {KEY}"}, json=body, timeout=5)
    assert resp.status_code == 400
    assert set(resp.json()) == {"id", "message"} and words in resp.json()["message"]


def test_rerank_v2_refuses_objects_model_less_and_unknown_fields(fake):
    def post(path, body):
        return requests.post(fake.url + path, headers={"Authorization": f"Bearer {KEY}"}, json=body, timeout=5)

    objects = post("/v2/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": [{"text": "a"}]})
    assert objects.status_code == 400 and "documents[0]" in objects.json()["message"]
    no_model = post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    assert no_model.status_code == 400 and "model" in no_model.json()["message"]
    assert post("/v1/rerank", {"query": QUERY, "documents": DOCS}).status_code == 200  # optional on v1
    for path, field in (("/v2/rerank", "top_k"), ("/v2/rerank", "return_documents"), ("/v1/rerank", "top_k"),
                        ("/v1/rerank", "max_tokens_per_doc")):
        resp = post(path, {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, field: 1})
        assert resp.status_code == 422 and f"parameter '{field}' is not a valid field" in resp.json()["message"]


def test_rerank_unknown_field_is_typed(co):
    with pytest.raises(cohere.UnprocessableEntityError):
        co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS,
                  request_options={"max_retries": 0, "additional_body_parameters": {"top_k": 2}})


@pytest.mark.parametrize("model, exc, status", [
    ("fail-400", cohere.BadRequestError, 400),
    ("fail-401", cohere.UnauthorizedError, 401),
    ("fail-404", cohere.NotFoundError, 404),
    ("fail-422", cohere.UnprocessableEntityError, 422),
    ("fail-429", cohere.TooManyRequestsError, 429),
    ("fail-498", cohere.InvalidTokenError, 498),
    ("fail-500", cohere.InternalServerError, 500),
    ("fail-402", ApiError, 402),
])
def test_rerank_typed_errors(co, co1, model, exc, status):
    for call in (co.rerank, co1.rerank):
        with pytest.raises(exc) as info:
            call(model=model, query=QUERY, documents=DOCS, request_options=NO_RETRY)
        assert info.value.status_code == status and info.value.body["message"]


def test_rerank_wrong_key(fake):
    with pytest.raises(cohere.UnauthorizedError):
        cohere.ClientV2(api_key="co-wrong", base_url=fake.url, timeout=5).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS)
    resp = requests.post(fake.url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=5)
    assert resp.status_code == 401 and resp.json()["message"] == "no api key supplied"
    leak = requests.post(fake.url + "/v2/rerank", headers={"Authorization": f"Bearer {KEY}"}, timeout=5,
                         json={"model": "leak-key", "query": QUERY, "documents": DOCS})
    assert leak.status_code == 401 and KEY in leak.json()["message"]


# ---- rerank (OpenAI-compatible: vLLM / Jina shape, under /compat) ----------------------------------

def compat(fake, body, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(fake.url + "/compat/v1/rerank", headers=headers, json=body, timeout=5)


def test_compat_rerank(fake):
    resp = compat(fake, {"model": "BAAI/bge-reranker-base", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"id", "model", "usage", "results"}
    assert body["id"].startswith("rerank-") and body["model"] == "BAAI/bge-reranker-base"
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == RANKED
    for r in body["results"]:
        assert set(r) == {"index", "relevance_score", "document"}
        assert r["document"] == {"text": DOCS[r["index"]]}
    # 3 query words x 5 documents + 6 + 6 + 5 + 3 + 6 document words
    assert body["usage"] == {"prompt_tokens": 41, "total_tokens": 41}
    sent = fake.requests[-1]
    assert (sent["method"], sent["path"]) == ("POST", "/compat/v1/rerank")
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["query"] == QUERY


def test_compat_rerank_api_base(fake):
    """A client configured with api_base <url>/compat/v1 appends /rerank."""
    api_base = fake.url + "/compat/v1"
    resp = requests.post(api_base + "/rerank", headers={"Authorization": f"Bearer {KEY}"}, timeout=5,
                         json={"model": "jina-reranker-v2-base-multilingual", "query": "wine", "documents": DOCS})
    assert resp.json()["results"][0] == {"index": 2, "relevance_score": 1.0, "document": {"text": DOCS[2]}}


def test_compat_rerank_top_n_and_return_documents(fake):
    top = compat(fake, {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": False})
    assert top.json()["results"] == [{"index": 0, "relevance_score": 1.0}, {"index": 1, "relevance_score": 2 / 3}]
    everything = compat(fake, {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 0})  # vLLM: 0 is all
    assert len(everything.json()["results"]) == 5
    objects = compat(fake, {"query": QUERY, "documents": [{"text": d} for d in DOCS]})
    assert objects.json()["model"] == "fake-reranker"
    assert [(r["index"], r["relevance_score"]) for r in objects.json()["results"]] == RANKED


@pytest.mark.parametrize("body, words", [
    ({"model": "m", "documents": DOCS}, "query"),
    ({"model": "m", "query": "  ", "documents": DOCS}, "query"),
    ({"model": "m", "query": QUERY}, "documents"),
    ({"model": "m", "query": QUERY, "documents": []}, "documents"),
    ({"model": "m", "query": QUERY, "documents": [1]}, "documents[0]"),
    ({"model": "m", "query": QUERY, "documents": DOCS, "top_n": -1}, "top_n"),
])
def test_compat_rerank_validation(fake, body, words):
    resp = compat(fake, body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"] and error["type"] == "BadRequestError" and error["code"] == 400


def test_compat_rerank_auth_and_triggers(fake):
    for key in (None, "wrong-key"):
        resp = compat(fake, {"model": "m", "query": QUERY, "documents": DOCS}, key=key)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == 401
    limited = compat(fake, {"model": "fail-429", "query": QUERY, "documents": DOCS})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["type"] == "RateLimitError"
    assert compat(fake, {"model": "fail-500", "query": QUERY, "documents": DOCS}).status_code == 500
