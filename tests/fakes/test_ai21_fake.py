"""Check the fake AI21 upstream with the official `ai21` SDK (Jamba chat, streams, typed errors).

The SDK (4.x) no longer has a Jurassic-2 `complete` client, so the J2 endpoint is checked with plain
HTTP against AI21's documented request and answer shapes.
"""

import json

import ai21
import pytest
import requests
from ai21.models.chat import AssistantMessage
from ai21.models.chat import ChatMessage
from ai21.models.chat import ToolMessage

from tests.fakes.ai21_server import ANSWER_PREFIX
from tests.fakes.ai21_server import J2_PREFIX
from tests.fakes.ai21_server import TOOL_PREFIX
from tests.fakes.ai21_server import FakeAI21

KEY = "ai21-fake-sdk-key-0123456789"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeAI21(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def client(fake):
    return ai21.AI21Client(api_key=KEY, api_host=fake.url + "/studio/v1", timeout_sec=5)


def user(text):
    return [ChatMessage(role="user", content=text)]


def test_chat(client, fake):
    resp = client.chat.completions.create(model="jamba-large", messages=[
        ChatMessage(role="system", content="be brief"), *user("hi there")], temperature=0.3, max_tokens=100)
    assert resp.id.startswith("chat-")
    [choice] = resp.choices
    assert choice.message.content == ANSWER_PREFIX + "hi there"
    assert choice.finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)
    sent = fake.requests[-1]
    assert sent["path"] == "/studio/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"


def test_n_and_max_tokens(client):
    resp = client.chat.completions.create(model="jamba-mini", messages=user("one two three"), n=2, max_tokens=2)
    assert [c.index for c in resp.choices] == [0, 1]
    assert {c.finish_reason for c in resp.choices} == {"length"}
    assert resp.choices[0].message.content == "Hello from"


def test_json_mode(client):
    resp = client.chat.completions.create(model="jamba-mini", messages=user("x"),
                                          response_format={"type": "json_object"})
    assert json.loads(resp.choices[0].message.content) == {"answer": ANSWER_PREFIX + "x"}


def test_stream(client):
    chunks = list(client.chat.completions.create(model="jamba-large", messages=user("stream me"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER_PREFIX + "stream me"
    assert [c.usage is not None for c in chunks].count(True) == 1 and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_stream_is_data_lines_ending_with_done(fake):
    resp = requests.post(fake.url + "/studio/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "jamba-large", "messages": [{"role": "user", "content": "hi"}],
                               "stream": True})
    lines = [line for line in resp.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_tool_call_and_result(client):
    resp = client.chat.completions.create(model="jamba-large", messages=user("weather in Paris?"), tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    follow = [*user("weather in Paris?"), AssistantMessage(content="", tool_calls=[call]),
              ToolMessage(tool_call_id=call.id, content="18C")]
    final = client.chat.completions.create(model="jamba-large", messages=follow, tools=TOOLS)
    assert final.choices[0].message.content == TOOL_PREFIX + "18C"


def test_tool_call_stream_keeps_extra_fields(client):
    chunks = list(client.chat.completions.create(model="jamba-large", messages=user("weather?"), tools=TOOLS,
                                                 stream=True))
    pieces = [p for c in chunks for p in (c.choices[0].delta.model_extra or {}).get("tool_calls") or []]
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"location": "Paris"}
    assert pieces[0]["id"] and pieces[0]["function"]["name"] == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_content_must_be_a_string(fake):
    resp = requests.post(fake.url + "/studio/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "jamba-large", "messages": [{"role": "user",
                                                                     "content": [{"type": "text", "text": "x"}]}]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "messages", 0, "content"]


@pytest.mark.parametrize("model, exc, status", [
    ("fail-400", ai21.errors.BadRequest, 400),
    ("context-length", ai21.errors.BadRequest, 400),
    ("fail-401", ai21.errors.Unauthorized, 401),
    ("fail-422", ai21.errors.UnprocessableEntity, 422),
    ("fail-429", ai21.errors.TooManyRequestsError, 429),
    ("fail-500", ai21.errors.AI21ServerError, 500),
    ("fail-503", ai21.errors.ServiceUnavailable, 503),
    ("fail-404", ai21.errors.AI21APIError, 404),
])
def test_typed_errors(client, model, exc, status):
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=user("hi"))
    assert info.value.status_code == status
    assert "detail" in json.loads(info.value.details)


def test_wrong_key(fake):
    bad = ai21.AI21Client(api_key="wrong", api_host=fake.url + "/studio/v1")
    with pytest.raises(ai21.errors.Unauthorized):
        bad.chat.completions.create(model="jamba-large", messages=user("hi"))


def test_j2_complete(fake):
    resp = requests.post(fake.url + "/studio/v1/j2-ultra/complete", headers={"Authorization": f"Bearer {KEY}"},
                         json={"prompt": "Life is  like", "numResults": 2, "maxTokens": 50, "temperature": 0.0,
                               "presencePenalty": {"scale": 0.5}})
    assert resp.status_code == 200
    data = resp.json()
    assert data["prompt"]["text"] == "Life is  like" and len(data["prompt"]["tokens"]) == 3
    assert len(data["completions"]) == 2
    first = data["completions"][0]
    assert first["data"]["text"] == J2_PREFIX + "Life is like"
    assert first["finishReason"] == {"reason": "endoftext"}
    assert "".join(t["generatedToken"]["token"] for t in first["data"]["tokens"]).replace("▁", " ") == \
        first["data"]["text"]


def test_j2_defaults_to_16_tokens_and_stops(fake):
    long_prompt = " ".join(f"w{i}" for i in range(30))
    resp = requests.post(fake.url + "/studio/v1/j2-mid/complete", headers={"Authorization": f"Bearer {KEY}"},
                         json={"prompt": long_prompt}).json()
    assert resp["completions"][0]["finishReason"] == {"reason": "length", "length": 16}
    assert len(resp["completions"][0]["data"]["tokens"]) == 16
    stopped = requests.post(fake.url + "/studio/v1/j2-mid/complete", headers={"Authorization": f"Bearer {KEY}"},
                            json={"prompt": "a. b", "stopSequences": ["."]}).json()
    assert stopped["completions"][0]["finishReason"] == {"reason": "stop", "sequence": "."}
    bad = requests.post(fake.url + "/studio/v1/j2-mid/complete", headers={"Authorization": f"Bearer {KEY}"},
                        json={"prompt": "x", "presencePenalty": 0.5})
    assert bad.status_code == 422
