"""Anthropic deployments behind a real gunicorn + gevent gateway, called with the real openai SDK."""

import json

import openai
import pytest
import requests
import yaml

from tests.fakes.anthropic_server import ANSWER_PREFIX
from tests.fakes.anthropic_server import FakeAnthropic
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-ant-api03-integration-upstream-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
TRIGGERS = ("fail-400", "fail-401", "fail-403", "fail-404", "fail-413", "fail-429", "fail-500", "fail-529",
            "context-length", "stream-error")


@pytest.fixture(scope="module")
def fake():
    with FakeAnthropic(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def deployment(name, model, fake, **extra):
    return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url,
                                                   "api_key": UPSTREAM_KEY, **extra}}


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module: an `anthropic/` deployment, a bare `claude-*` one, the triggers."""
    models = [deployment("claude", "anthropic/claude-3-5-sonnet-20240620", fake),
              deployment("claude-bare", "claude-3-haiku-20240307", fake)]
    models += [deployment(name, f"anthropic/{name}", fake) for name in TRIGGERS]
    tmp = tmp_path_factory.mktemp("gw-anthropic")
    path = tmp / "config.yaml"
    # the trigger deployments fail on purpose, more than once: keep them out of cooldown
    path.write_text(yaml.safe_dump({"model_list": models, "router_settings": {"allowed_fails": 1000}}))
    gw = GatewayProcess(["--config", str(path)], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def sent(fake):
    """The body of the last request the fake received."""
    return fake.requests[-1]["json"]


def test_chat(client, fake):
    resp = client.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}, *HELLO], temperature=0.3, stop=["zzz"],
        user="user-7")
    choice = resp.choices[0]
    assert choice.message.content == ANSWER_PREFIX + "hello there"
    assert choice.finish_reason == "stop"
    assert resp.id.startswith("msg_") and resp.model == "claude-3-5-sonnet-20240620"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)
    req = fake.requests[-1]
    assert req["path"] == "/v1/messages"
    assert req["headers"]["x-api-key"] == UPSTREAM_KEY
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["json"] == {"model": "claude-3-5-sonnet-20240620", "max_tokens": 4096,
                           "system": [{"type": "text", "text": "be brief"}],
                           "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
                           "temperature": 0.3, "stop_sequences": ["zzz"], "metadata": {"user_id": "user-7"}}


def test_bare_claude_name_and_length(client, fake):
    resp = client.chat.completions.create(model="claude-bare", messages=HELLO, max_tokens=3)
    assert resp.choices[0].message.content == "Hello from fake"
    assert resp.choices[0].finish_reason == "length"
    assert sent(fake)["model"] == "claude-3-haiku-20240307" and sent(fake)["max_tokens"] == 3


def test_stream_with_usage(client):
    text, finish, usage = [], None, None
    stream = client.chat.completions.create(model="claude", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == ANSWER_PREFIX + "hello there"
    assert finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 6, 8)


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="claude", messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER_PREFIX + "hello there"


def test_tools_round_trip(client, fake):
    question = [{"role": "user", "content": "What is the weather in Paris and London?"}]
    resp = client.chat.completions.create(model="claude", messages=question, tools=TOOLS)
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check the weather."
    calls = message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"location": "Paris"}), ("get_weather", {"location": "London"})]
    assert sent(fake)["tools"][0]["input_schema"]["required"] == ["location"]
    results = [{"role": "tool", "tool_call_id": c.id, "content": f"sunny in {json.loads(c.function.arguments)['location']}"}
               for c in calls]
    answer = client.chat.completions.create(
        model="claude", tools=TOOLS,
        messages=[*question, message.model_dump(exclude_none=True), *results])
    assert answer.choices[0].message.content == ANSWER_PREFIX + "tool said sunny in Paris sunny in London"
    assert answer.choices[0].finish_reason == "stop"
    # both tool results travelled in one user turn, answering the assistant's tool_use blocks
    turns = sent(fake)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result"]


def test_tool_choice_and_parallel_off(client, fake):
    resp = client.chat.completions.create(
        model="claude", tools=TOOLS, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "weather in Tokyo and Paris"}])
    assert resp.choices[0].message.content is None
    assert [json.loads(c.function.arguments) for c in resp.choices[0].message.tool_calls] == [{"location": "Tokyo"}]
    assert sent(fake)["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


def test_streamed_tool_calls(client):
    calls, finish = {}, None
    for chunk in client.chat.completions.create(
            model="claude", tools=TOOLS, stream=True,
            messages=[{"role": "user", "content": "weather in London and Tokyo?"}]):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": None, "args": ""})
                if call.id:
                    slot["id"], slot["name"] = call.id, call.function.name
                slot["args"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert [(calls[i]["name"], json.loads(calls[i]["args"])) for i in (0, 1)] == [
        ("get_weather", {"location": "London"}), ("get_weather", {"location": "Tokyo"})]
    assert all(calls[i]["id"].startswith("toolu_") for i in (0, 1))


def test_image_parts(client, fake):
    resp = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "what is this (images: 2)"
    blocks = sent(fake)["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_completions_through_chat(client, fake):
    resp = client.completions.create(model="claude", prompt="say hi", max_tokens=20)
    assert resp.object == "text_completion"
    assert resp.choices[0].text == ANSWER_PREFIX + "say hi" and resp.choices[0].finish_reason == "stop"
    assert sent(fake)["max_tokens"] == 20
    parts = [c.choices[0].text for c in client.completions.create(model="claude", prompt="say hi", stream=True)
             if c.choices]
    assert "".join(parts) == resp.choices[0].text


def test_no_embeddings(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="claude", input="x")
    assert "does not support embeddings" in info.value.body["message"]


def test_unsupported_params_are_refused(client, fake):
    for extra in ({"response_format": {"type": "json_object"}}, {"n": 2}, {"seed": 1}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="claude", messages=HELLO, **extra)
        assert info.value.body["param"] == next(iter(extra))
    assert fake.requests == []


@pytest.mark.parametrize("model, exc, status, fragment", [
    ("fail-400", openai.BadRequestError, 400, "temperature: Input should be less than or equal to 1"),
    ("fail-401", openai.AuthenticationError, 401, "invalid x-api-key"),
    ("fail-403", openai.PermissionDeniedError, 403, "does not have permission"),
    ("fail-404", openai.NotFoundError, 404, "model: fail-404"),
    ("fail-413", openai.APIStatusError, 413, "maximum allowed number of bytes"),
    ("fail-429", openai.RateLimitError, 429, "per-minute rate limit"),
    ("fail-500", openai.InternalServerError, 500, "Internal server error"),
    ("fail-529", openai.InternalServerError, 529, "Overloaded"),
    ("context-length", openai.BadRequestError, 400, "prompt is too long"),
])
def test_errors_map_to_openai_exceptions(client, model, exc, status, fragment):
    err = expect_error(client, model, HELLO, exc, absent=[UPSTREAM_KEY], status=status, fragment=fragment,
                       code="context_length_exceeded" if model == "context-length" else None,
                       retry_after="7" if status == 429 else None)
    assert "anthropic" in err.body["message"]


def test_error_event_mid_stream(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Hello from"
    assert "Overloaded" in str(info.value)


def test_upstream_key_never_in_answers(gateway, fake):
    answers = []
    for model in ("claude", "fail-401", "fail-500", "stream-error"):
        for stream in (False, True):
            resp = requests.post(gateway.url + "/v1/chat/completions", timeout=20,
                                 json={"model": model, "messages": HELLO, "stream": stream})
            answers.append(resp.text + json.dumps(dict(resp.headers)))
    answers.append(requests.get(gateway.url + "/v1/models", timeout=20).text)
    assert all(UPSTREAM_KEY not in a and UPSTREAM_KEY[-12:] not in a for a in answers)
    assert UPSTREAM_KEY not in gateway.log()


def test_litellm_env_vars_and_drop_params(start_gateway, fake):
    """ANTHROPIC_API_KEY / ANTHROPIC_API_BASE as LiteLLM reads them; drop_params drops what cannot map."""
    gw = start_gateway({"model_list": [{"model_name": "c", "litellm_params": {"model": "claude-3-opus-20240229"}}],
                        "litellm_settings": {"drop_params": True}},
                       env={"ANTHROPIC_API_KEY": UPSTREAM_KEY, "ANTHROPIC_API_BASE": fake.url})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="anything", max_retries=0, timeout=20)
    resp = c.chat.completions.create(model="c", messages=HELLO, response_format={"type": "json_object"},
                                     seed=3, presence_penalty=0.1)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    req = fake.requests[-1]
    assert req["headers"]["x-api-key"] == UPSTREAM_KEY
    assert set(req["json"]) == {"model", "messages", "max_tokens"}
