"""Cohere through the real gateway (gunicorn + gevent) against the fake Cohere, called with the openai SDK."""

import json

import openai
import pytest
import requests
import yaml

from tests.fakes.cohere_server import ANSWER_PREFIX
from tests.fakes.cohere_server import TOOL_PREFIX
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.cohere_server import fake_embedding
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "co-integration-secret-key-8d7c6b5a4f3e"
HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
TRIGGERS = ("fail-400", "fail-401", "fail-404", "fail-422", "fail-429", "fail-498", "fail-500", "context-length",
            "leak-key", "stream-error")


@pytest.fixture(scope="module")
def fake():
    with FakeCohere(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module: explicit-key deployments, and one that takes the key from env vars."""
    def deployment(name, model, **extra):
        return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, "api_key": KEY, **extra}}

    models = [deployment("command-r", "cohere/command-r"),
              deployment("vision", "cohere/command-a-vision-07-2025"),
              deployment("embed", "cohere/embed-english-v3.0"),
              {"model_name": "command-r-env", "litellm_params": {"model": "command-r"}}]
    models += [deployment(name, f"cohere/{name}") for name in TRIGGERS]
    tmp = tmp_path_factory.mktemp("gw-cohere")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models}))
    gw = GatewayProcess(["--config", str(path)], {"COHERE_API_KEY": KEY, "COHERE_API_BASE": fake.url},
                        tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    log = gw.log()
    gw.stop()
    assert KEY not in log, "the upstream key must never be logged"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0, timeout=20)


def sent(fake, path="/v2/chat"):
    """The last request body the fake received on `path`."""
    return [r for r in fake.requests if r["path"] == path][-1]


def test_chat(client, fake):
    resp = client.chat.completions.create(model="command-r", messages=[{"role": "system", "content": "be brief"},
                                                                       *HELLO],
                                          temperature=0.2, top_p=0.5, stop=["zzz"], seed=7, max_tokens=50)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (4, 6)
    req = sent(fake)
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["json"] == {"model": "command-r", "messages": [{"role": "system", "content": "be brief"}, *HELLO],
                           "temperature": 0.2, "p": 0.5, "stop_sequences": ["zzz"], "seed": 7, "max_tokens": 50,
                           "stream": False}


def test_key_and_base_from_env(client, fake):
    resp = client.chat.completions.create(model="command-r-env", messages=HELLO)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert sent(fake)["headers"]["authorization"] == f"Bearer {KEY}"


def test_max_tokens_finish_length(client):
    resp = client.chat.completions.create(model="command-r", messages=HELLO, max_tokens=2)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == "Hello from"


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream(client, include_usage):
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    text, finish, usage, ids = [], None, None, set()
    for chunk in client.chat.completions.create(model="command-r", messages=HELLO, stream=True, **options):
        ids.add(chunk.id)
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == ANSWER_PREFIX + "hello there"
    assert finish == "stop"
    assert len(ids) == 1
    if include_usage:
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 6, 8)
    else:
        assert usage is None


def test_tools_round_trip(client, fake):
    first = client.chat.completions.create(model="command-r", tools=TOOLS, messages=[
        {"role": "user", "content": "What is the weather in Paris and London?"}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == [{"location": "Paris"}, {"location": "London"}]
    assert all(c.function.name == "get_weather" and c.id for c in calls)
    messages = [{"role": "user", "content": "What is the weather in Paris and London?"},
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"},
                {"role": "tool", "tool_call_id": calls[1].id, "content": "12C and rainy"}]
    final = client.chat.completions.create(model="command-r", tools=TOOLS, messages=messages)
    assert final.choices[0].message.content == TOOL_PREFIX + "12C and rainy"
    assert final.choices[0].finish_reason == "stop"
    upstream = sent(fake)["json"]["messages"]
    assert upstream[1]["role"] == "assistant" and [c["id"] for c in upstream[1]["tool_calls"]] == [c.id for c in calls]
    assert upstream[2] == {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"}


def test_tool_call_stream(client):
    calls = {}
    finish = None
    for chunk in client.chat.completions.create(model="command-r", tools=TOOLS, stream=True, messages=[
            {"role": "user", "content": "weather in Tokyo and Madrid?"}]):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "name": None, "args": "", "pieces": 0})
                call["id"] = piece.id or call["id"]
                call["name"] = (piece.function.name if piece.function else None) or call["name"]
                call["args"] += (piece.function.arguments if piece.function else None) or ""
                call["pieces"] += 1
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert [json.loads(calls[i]["args"]) for i in (0, 1)] == [{"location": "Madrid"}, {"location": "Tokyo"}]
    assert all(c["id"] and c["name"] == "get_weather" and c["pieces"] > 2 for c in calls.values())


def test_image_parts(client, fake):
    parts = [{"type": "text", "text": "describe these"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]
    resp = client.chat.completions.create(model="vision", messages=[{"role": "user", "content": parts}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "describe these [images: 2]"
    assert sent(fake)["json"]["messages"][0]["content"] == parts
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="vision", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])
    assert "image_url" in info.value.body["message"]


def test_embeddings_base64_default_and_float_agree(client, gateway, fake):
    via_sdk = client.embeddings.create(model="embed", input=["alpha", "beta"], dimensions=6)
    as_float = requests.post(gateway.url + "/v1/embeddings", json={
        "model": "embed", "input": ["alpha", "beta"], "dimensions": 6, "encoding_format": "float"}).json()
    assert [d.embedding for d in via_sdk.data] == [fake_embedding("alpha", 6), fake_embedding("beta", 6)]
    for got, want in zip(via_sdk.data, as_float["data"]):
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)
    assert via_sdk.usage.prompt_tokens == 2
    req = sent(fake, "/v2/embed")["json"]
    assert req == {"model": "embed-english-v3.0", "texts": ["alpha", "beta"], "input_type": "search_document",
                   "embedding_types": ["float"], "output_dimension": 6}


def test_completions_through_chat(client):
    resp = client.completions.create(model="command-r", prompt="say hi")
    assert resp.choices[0].text == ANSWER_PREFIX + "say hi"
    assert resp.object == "text_completion"
    pieces = [c.choices[0].text for c in client.completions.create(model="command-r", prompt="say hi", stream=True)
              if c.choices]
    assert "".join(pieces) == ANSWER_PREFIX + "say hi"


@pytest.mark.parametrize("model, exc, status, text", [
    ("fail-400", openai.BadRequestError, 400, "message must be at least 1 token long"),
    ("fail-401", openai.AuthenticationError, 401, "invalid api token"),
    ("fail-404", openai.NotFoundError, 404, "not found"),
    ("fail-422", openai.UnprocessableEntityError, 422, "p must be between"),
    ("fail-429", openai.RateLimitError, 429, "Trial key"),
    ("fail-498", openai.AuthenticationError, 401, "invalid api token"),
    ("fail-500", openai.InternalServerError, 500, "internal server error"),
    ("context-length", openai.BadRequestError, 400, "too many tokens"),
    ("leak-key", openai.AuthenticationError, 401, "[redacted]"),
])
def test_errors(client, model, exc, status, text):
    expect_error(client, model, HELLO, exc, absent=[KEY], status=status, fragment=text,
                 code="context_length_exceeded" if model == "context-length" else None,
                 retry_after="3" if model == "fail-429" else None)


def test_failed_generation_mid_stream_is_a_final_error_event(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == ANSWER_PREFIX + "hello there"
    assert "ERROR" in str(info.value) and KEY not in str(info.value)


def test_unsupported_param_refused(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="command-r", messages=HELLO, logit_bias={"1": 5})
    assert info.value.body["param"] == "logit_bias"
    assert not fake.requests
