"""Check the fake Ollama with the official `ollama` SDK: if the SDK parses it, gateway tests may rely on it."""

import base64

import ollama
import pytest
import requests

from tests.fakes.ollama_server import ANSWER_PREFIX
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.ollama_server import fake_embedding

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
                       "WjR9awAAAABJRU5ErkJggg==")
TOOLS = [{"type": "function", "function": {"name": "get_current_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {
                                               "location": {"type": "string"}}, "required": ["location"]}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeOllama() as server:
        yield server


@pytest.fixture
def client(fake):
    fake.reset()
    return ollama.Client(host=fake.url)


def test_chat(client, fake):
    resp = client.chat(model="llama3.2", messages=[{"role": "user", "content": "why is the sky blue?"}],
                       options={"temperature": 0.1})
    assert resp.message.role == "assistant"
    assert resp.message.content == ANSWER_PREFIX + "why is the sky blue?"
    assert resp.done and resp.done_reason == "stop"
    assert resp.prompt_eval_count == 5 and resp.eval_count == 8
    sent = fake.last("/api/chat")["json"]
    assert sent["stream"] is False and sent["options"] == {"temperature": 0.1}


def test_chat_stream(client):
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi there"}], stream=True))
    assert "".join(p.message.content for p in parts) == ANSWER_PREFIX + "hi there"
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == 5


def test_chat_num_predict_stops_with_length(client):
    resp = client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b c"}],
                       options={"num_predict": 2})
    assert resp.message.content == "Hello from"
    assert resp.done_reason == "length"


def test_chat_tools_and_tool_result(client):
    resp = client.chat(model="llama3.2", tools=TOOLS,
                       messages=[{"role": "user", "content": "weather in Paris and London?"}])
    calls = resp.message.tool_calls
    assert [c.function.name for c in calls] == ["get_current_weather"] * 2
    assert [c.function.arguments["location"] for c in calls] == ["Paris", "London"]
    follow = client.chat(model="llama3.2", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        resp.message,
        {"role": "tool", "content": "22 degrees", "tool_name": "get_current_weather"}])
    assert follow.message.content == "The tool said: 22 degrees"


def test_chat_stream_tools(client):
    parts = list(client.chat(model="llama3.2", tools=TOOLS, stream=True,
                             messages=[{"role": "user", "content": "weather in Tokyo"}]))
    calls = [c for p in parts for c in p.message.tool_calls or []]
    assert [c.function.arguments for c in calls] == [{"location": "Tokyo", "format": "celsius"}]


def test_chat_image(client, fake):
    resp = client.chat(model="llava", messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    assert resp.message.content.endswith("I see 1 image(s).")
    assert fake.last("/api/chat")["json"]["messages"][0]["images"] == [base64.b64encode(PNG).decode()]


def test_generate_and_stream(client):
    resp = client.generate(model="llama3.2", prompt="Why?", options={"num_predict": 100})
    assert resp.response == ANSWER_PREFIX + "Why?" and resp.done
    assert resp.context == [1, 2, 3]
    parts = list(client.generate(model="llama3.2", prompt="Why?", stream=True))
    assert "".join(p.response for p in parts) == resp.response


def test_embed(client):
    resp = client.embed(model="all-minilm", input=["a b", "c"])
    assert resp.embeddings == [fake_embedding("a b"), fake_embedding("c")]
    assert resp.prompt_eval_count == 3


def test_list_models(client):
    assert "llava:latest" in [m.model for m in client.list().models]


@pytest.mark.parametrize("model, status, text", [
    ("missing", 404, 'model "missing" not found'),
    ("fail-500", 500, "llama runner process has terminated"),
    ("long-context", 400, "exceeds the context length"),
])
def test_errors(client, model, status, text):
    with pytest.raises(ollama.ResponseError) as exc:
        client.chat(model=model, messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == status
    assert text in exc.value.error


def test_stream_error_line(client):
    with pytest.raises(ollama.ResponseError) as exc:
        list(client.chat(model="stream-error", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert "error was encountered" in exc.value.error


def test_bad_image_is_refused(fake):
    # The SDK checks images itself, so send the bad one over plain HTTP.
    resp = requests.post(fake.url + "/api/chat", json={"model": "llava", "stream": False, "messages": [
        {"role": "user", "content": "x", "images": ["not base64!"]}]}, timeout=5)
    assert resp.status_code == 400
    assert "illegal base64" in resp.json()["error"]


def test_key_required_when_configured():
    with FakeOllama(api_key="ollama-proxy-key") as fake:
        with pytest.raises(ollama.ResponseError) as exc:
            ollama.Client(host=fake.url).chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
        assert exc.value.status_code == 401
        ok = ollama.Client(host=fake.url, headers={"Authorization": "Bearer ollama-proxy-key"})
        assert ok.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}]).message.content
