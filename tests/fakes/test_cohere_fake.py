"""Check the fake Cohere upstream with the official `cohere` SDK (ClientV2).

If the SDK parses the fake's answers and streams and raises its typed errors, the fake is faithful
enough for the gateway's Cohere tests to rely on it.
"""

import json

import cohere
import httpx
import pytest
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
