"""Gemini (and retired PaLM) through a real gunicorn + gevent gateway, called with the real openai SDK."""

import json

import openai
import pytest
import requests
import yaml

from tests.fakes.gemini_server import ANSWER_PREFIX
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.gemini_server import fake_embedding
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

MASTER = "sk-master-gemini-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
PNG_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
TRIGGERS = ("fail-400", "fail-403", "fail-404", "fail-429", "fail-500", "fail-503", "context-length", "blocked",
            "stream-error")


@pytest.fixture(scope="module")
def fake():
    with FakeGemini() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def deployment(name, model, fake, **extra):
    return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, "api_key": fake.api_key,
                                                   **extra}}


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module's tests: Gemini chat + embeddings, the fake's triggers, PaLM."""
    models = [deployment("gemini-flash", "gemini/gemini-2.0-flash", fake),
              deployment("gemini-embed", "gemini/text-embedding-004", fake),
              {"model_name": "wrong-key", "litellm_params": {"model": "gemini/gemini-2.0-flash", "api_base": fake.url,
                                                             "api_key": "AIzaSyWRONG-key-for-test"}},
              {"model_name": "chat-bison", "litellm_params": {"model": "palm/chat-bison"}},
              {"model_name": "text-bison", "litellm_params": {"model": "palm/text-bison-001"}}]
    models += [deployment(t, f"gemini/{t}", fake) for t in TRIGGERS]
    tmp = tmp_path_factory.mktemp("gw-gemini")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "general_settings": {"master_key": MASTER},
                                    "router_settings": {"fallbacks": [{"text-bison": ["gemini-flash"]}]}}))
    gw = GatewayProcess(["--config", str(path)], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key=MASTER, max_retries=0, timeout=20)


def calls_to(fake, op):
    return [r for r in fake.requests if r["path"].endswith(":" + op)]


def test_chat(client, fake):
    resp = client.chat.completions.create(
        model="gemini-flash", messages=[{"role": "system", "content": "be brief"}, *HELLO], temperature=0.3,
        max_tokens=50, stop=["zzz"], seed=7)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)
    assert resp.model == "gemini-2.0-flash" and resp.id.startswith("chatcmpl-")
    [sent] = calls_to(fake, "generateContent")
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == fake.api_key and sent["query"] == {}
    assert sent["json"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["json"]["generationConfig"] == {"temperature": 0.3, "seed": 7, "maxOutputTokens": 50,
                                                "stopSequences": ["zzz"]}


def test_chat_n_and_max_tokens(client):
    resp = client.chat.completions.create(model="gemini-flash", messages=HELLO, n=2, max_tokens=2)
    assert [(c.index, c.message.content, c.finish_reason) for c in resp.choices] == [
        (0, "Hello from", "length"), (1, "Hello from", "length")]


def test_stream_with_usage(client, fake):
    chunks = list(client.chat.completions.create(model="gemini-flash", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER_PREFIX + "hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 8
    assert len({c.id for c in chunks}) == 1
    assert calls_to(fake, "streamGenerateContent")[0]["query"] == {"alt": "sse"}


def test_tools_round_trip(client, fake):
    messages = [{"role": "user", "content": "What's the weather in Paris and London?"}]
    first = client.chat.completions.create(model="gemini-flash", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"location": "Paris"}), ("get_weather", {"location": "London"})]
    declared = calls_to(fake, "generateContent")[-1]["json"]["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in declared["parameters"]  # cleaned for Gemini's schema subset
    messages.append(choice.message.model_dump(exclude_none=True))
    for call, temp in zip(choice.message.tool_calls, ("21C", "15C")):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": temp})
    final = client.chat.completions.create(model="gemini-flash", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == (
        'Tool get_weather said: {"content": "21C"} Tool get_weather said: {"content": "15C"}')
    assert final.choices[0].finish_reason == "stop"


def test_stream_tool_calls(client):
    chunks = list(client.chat.completions.create(model="gemini-flash", tools=TOOLS, stream=True,
                                                 messages=[{"role": "user", "content": "weather in Tokyo and Paris"}]))
    calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert [(t.index, json.loads(t.function.arguments)["location"]) for t in calls] == [(0, "Paris"), (1, "Tokyo")]
    assert all(t.id and t.type == "function" and t.function.name == "get_weather" for t in calls)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_part(client, fake):
    resp = client.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "what is this? [images: image/png]"
    part = calls_to(fake, "generateContent")[-1]["json"]["contents"][0]["parts"][1]
    assert part["inlineData"] == {"mimeType": "image/png", "data": PNG_URL.split(",", 1)[1]}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "never fetches" in info.value.message


def test_embeddings_base64_default_and_float(client, gateway, fake):
    via_sdk = client.embeddings.create(model="gemini-embed", input=["alpha", "beta"], dimensions=8)
    as_float = requests.post(gateway.url + "/v1/embeddings", headers={"Authorization": f"Bearer {MASTER}"},
                             json={"model": "gemini-embed", "input": ["alpha", "beta"], "dimensions": 8,
                                   "encoding_format": "float"}).json()
    assert [d["embedding"] for d in as_float["data"]] == [fake_embedding("alpha", 8), fake_embedding("beta", 8)]
    for got, want in zip(via_sdk.data, as_float["data"]):
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)
    sent = calls_to(fake, "batchEmbedContents")[0]["json"]
    assert sent["requests"][0] == {"model": "models/text-embedding-004", "content": {"parts": [{"text": "alpha"}]},
                                   "outputDimensionality": 8}


def test_completions_through_chat(client):
    resp = client.completions.create(model="gemini-flash", prompt="say hi")
    assert resp.object == "text_completion" and resp.choices[0].text == ANSWER_PREFIX + "say hi"
    parts = list(client.completions.create(model="gemini-flash", prompt="say hi", stream=True,
                                           stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in parts if c.choices) == ANSWER_PREFIX + "say hi"
    assert parts[-1].usage.completion_tokens == 6


def test_json_mode(client, fake):
    resp = client.chat.completions.create(model="gemini-flash", messages=HELLO,
                                          response_format={"type": "json_object"})
    assert json.loads(resp.choices[0].message.content) == {"answer": ANSWER_PREFIX + "hello there"}


def test_blocked_prompt_is_content_filter(client):
    resp = client.chat.completions.create(model="blocked", messages=HELLO)
    assert resp.choices[0].finish_reason == "content_filter" and resp.choices[0].message.content is None


@pytest.mark.parametrize("model, exc, status, fragment", [
    ("fail-400", openai.BadRequestError, 400, "Invalid value at 'generation_config.temperature'"),
    ("context-length", openai.BadRequestError, 400, "exceeds the maximum number of tokens"),
    ("wrong-key", openai.AuthenticationError, 401, "API key not valid"),
    ("fail-403", openai.PermissionDeniedError, 403, "You do not have permission"),
    ("fail-404", openai.NotFoundError, 404, "models/fail-404 is not found"),
    ("fail-429", openai.RateLimitError, 429, "You exceeded your current quota"),
    ("fail-500", openai.InternalServerError, 500, "An internal error has occurred"),
    ("fail-503", openai.InternalServerError, 503, "The model is overloaded"),
])
def test_upstream_errors(client, fake, model, exc, status, fragment):
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=HELLO)
    err = info.value
    assert err.status_code == status and fragment in err.message
    assert fake.api_key not in err.response.text and "AIzaSyWRONG" not in err.response.text
    if model == "context-length":
        assert err.code == "context_length_exceeded"
    if model == "fail-429":
        assert err.response.headers["retry-after"] == "2"


def test_error_after_stream_started(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert "".join(r or "" for r in received) == "Hello from "
    assert "mid-stream" in str(info.value)


def test_unsupported_param_is_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-flash", messages=HELLO, logprobs=True)
    assert info.value.param == "logprobs"


def test_palm_is_retired(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="chat-bison", messages=HELLO)
    assert "PaLM model chat-bison is retired by Google; use" in info.value.message


def test_palm_falls_back_when_configured(client):
    resp = client.chat.completions.create(model="text-bison", messages=HELLO)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"


def test_key_never_in_any_answer(client, gateway, fake):
    bodies = [requests.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {MASTER}"}).text,
              client.chat.completions.with_raw_response.create(model="gemini-flash", messages=HELLO).text]
    for model in ("wrong-key", "fail-400"):
        bodies.append(requests.post(gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                                    json={"model": model, "messages": HELLO}).text)
    assert all(fake.api_key not in b and "AIzaSyWRONG" not in b for b in bodies)
    assert fake.api_key not in gateway.log()


def test_env_vars_as_litellm_users_set_them(start_gateway, fake):
    """GEMINI_API_KEY + GEMINI_API_BASE from the environment, no key in the config."""
    gw = start_gateway({"model_list": [{"model_name": "g", "litellm_params": {"model": "gemini/gemini-1.5-pro"}}]},
                       env={"GEMINI_API_KEY": fake.api_key, "GEMINI_API_BASE": fake.url})
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="g", messages=HELLO)
    assert reply.choices[0].message.content.startswith(ANSWER_PREFIX)
    assert fake.requests[-1]["path"] == "/v1beta/models/gemini-1.5-pro:generateContent"
    assert fake.requests[-1]["headers"]["x-goog-api-key"] == fake.api_key
