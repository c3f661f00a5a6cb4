"""Ollama through a real gateway (gunicorn + gevent) in front of the fake Ollama, called with the openai SDK."""

import base64
import json
import struct

import openai
import pytest
import requests

from tests.fakes.ollama_server import ANSWER_PREFIX
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.ollama_server import fake_embedding
from tests.integration.conftest import expect_error

pytestmark = pytest.mark.integration

KEY = "ollama-proxy-key-7f3a9c"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "location": {"type": "string"}}, "required": ["location"]}}}]
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake():
    with FakeOllama(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module, every deployment pointing at the fake."""
    import yaml

    from tests.integration.conftest import GatewayProcess
    from tests.integration.conftest import free_port

    def dep(name, model, **extra):
        return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, "api_key": KEY, **extra}}

    config = {"model_list": [
        dep("chat", "ollama_chat/llama3.2"),
        dep("gen", "ollama/llama3.2"),
        dep("llava", "ollama_chat/llava"),
        dep("embed", "ollama/all-minilm"),
        dep("missing", "ollama_chat/missing"),
        dep("long", "ollama_chat/long-context"),
        dep("broken", "ollama_chat/fail-500"),
        dep("stream-error", "ollama_chat/stream-error"),
        {"model_name": "wrong-key", "litellm_params": {"model": "ollama_chat/llama3.2", "api_base": fake.url,
                                                       "api_key": "ollama-wrong-key-000"}},
    ]}
    tmp = tmp_path_factory.mktemp("gw-ollama")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    gw = GatewayProcess(["--config", str(path)], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()
    assert KEY not in gw.log_path.read_text(errors="replace")


@pytest.fixture
def client(gateway, fake):
    fake.reset()
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def test_chat(client, fake):
    resp = client.chat.completions.create(model="chat", messages=[{"role": "system", "content": "be brief"}, *HELLO],
                                          temperature=0.2, max_tokens=50, seed=3, stop=["###"])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 4 and resp.usage.completion_tokens == 5 and resp.usage.total_tokens == 9
    sent = fake.last("/api/chat")
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["options"] == {"temperature": 0.2, "seed": 3, "num_predict": 50, "stop": ["###"]}
    assert sent["json"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["json"]["stream"] is False


def test_chat_length(client):
    resp = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
    assert resp.choices[0].message.content == "Hello from"
    assert resp.choices[0].finish_reason == "length"


def test_stream_with_usage(client):
    chunks = list(client.chat.completions.create(model="chat", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER_PREFIX + "hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7
    assert chunks[0].choices[0].delta.role == "assistant"


def test_generate_prefix_chat_and_stream(client, fake):
    resp = client.chat.completions.create(model="gen", messages=[{"role": "system", "content": "s"}, *HELLO])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    sent = fake.last("/api/generate")["json"]
    assert sent["prompt"] == "hello there" and sent["system"] == "s"
    chunks = list(client.chat.completions.create(model="gen", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == resp.choices[0].message.content


def test_tools_round_trip(client, fake):
    ask = [{"role": "user", "content": "what is the weather in Paris and London?"}]
    resp = client.chat.completions.create(model="chat", messages=ask, tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [json.loads(c.function.arguments)["location"] for c in calls] == ["Paris", "London"]
    assert len({c.id for c in calls}) == 2
    assert fake.last("/api/chat")["json"]["tools"] == TOOLS
    follow = client.chat.completions.create(model="chat", tools=TOOLS, messages=[
        *ask, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "22C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "18C"}])
    assert follow.choices[0].message.content == "The tool said: 18C"
    sent = fake.last("/api/chat")["json"]["messages"]
    assert sent[1]["tool_calls"][0] == {"function": {"name": "get_weather",
                                                     "arguments": {"location": "Paris", "format": "celsius"}}}
    assert sent[2] == {"role": "tool", "content": "22C", "tool_name": "get_weather"}


def test_streamed_tool_calls(client):
    chunks = list(client.chat.completions.create(
        model="chat", tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": "weather in Tokyo and Paris"}]))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [d.index for d in deltas] == [0, 1]
    assert [json.loads(d.function.arguments)["location"] for d in deltas] == ["Paris", "Tokyo"]
    assert all(d.id and d.function.name == "get_weather" for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_part(client, fake):
    resp = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "what is this? I see 1 image(s)."
    assert fake.last("/api/chat")["json"]["messages"][0]["images"] == [PNG]


def test_http_image_url_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="llava", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}]}])
    assert "base64" in exc.value.message
    assert fake.requests == []


def test_embeddings_base64_and_float_agree(client, fake):
    default = client.embeddings.create(model="embed", input=["sky is blue", "grass"])
    floats = client.embeddings.create(model="embed", input=["sky is blue", "grass"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert floats.data[0].embedding == pytest.approx(fake_embedding("sky is blue"))
    assert floats.usage.prompt_tokens == 4
    raw = requests.post(client.base_url.join("embeddings").__str__(), timeout=10, json={
        "model": "embed", "input": "grass", "encoding_format": "base64"}).json()
    vector = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(vector) == pytest.approx(fake_embedding("grass"))
    assert fake.last("/api/embed")["json"]["input"] == ["grass"]


def test_completions_native_and_through_chat(client, fake):
    resp = client.completions.create(model="gen", prompt="Once upon", max_tokens=3)
    assert resp.choices[0].text == "Hello from Ollama:" and resp.choices[0].finish_reason == "length"
    assert fake.last("/api/generate")["json"]["prompt"] == "Once upon"
    streamed = list(client.completions.create(model="gen", prompt="Once upon", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == ANSWER_PREFIX + "Once upon"
    via_chat = client.completions.create(model="chat", prompt="Once upon")
    assert via_chat.choices[0].text == ANSWER_PREFIX + "Once upon"
    assert fake.last("/api/chat")["json"]["messages"] == [{"role": "user", "content": "Once upon"}]


@pytest.mark.parametrize("model, exc_type, text", [
    ("missing", openai.NotFoundError, 'model "missing" not found'),
    ("long", openai.BadRequestError, "exceeds the context length"),
    ("broken", openai.InternalServerError, "llama runner process has terminated"),
    ("wrong-key", openai.AuthenticationError, "unauthorized"),
])
def test_errors(client, model, exc_type, text):
    expect_error(client, model, HELLO, exc_type, absent=[KEY, "ollama-wrong-key-000"], fragment=text,
                 code="context_length_exceeded" if model == "long" else None)


def test_error_mid_stream(client):
    with pytest.raises(openai.APIError) as exc:
        list(client.chat.completions.create(model="stream-error", messages=HELLO, stream=True))
    assert "error was encountered" in str(exc.value)


def test_unsupported_param_is_refused(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="chat", messages=HELLO, logit_bias={"1": 2})
    assert exc.value.param == "logit_bias"


def test_key_never_in_answers(gateway):
    listing = requests.get(gateway.url + "/v1/models", timeout=10).text
    assert "gen" in listing and KEY not in listing
