"""AI21 (Jamba and Jurassic-2) through the real gateway against the fake AI21, called with the openai SDK."""

import json

import openai
import pytest
import yaml

from tests.fakes.ai21_server import ANSWER_PREFIX
from tests.fakes.ai21_server import J2_PREFIX
from tests.fakes.ai21_server import TOOL_PREFIX
from tests.fakes.ai21_server import FakeAI21
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "ai21-integration-secret-key-1f2e3d4c5b"
HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
TRIGGERS = ("fail-400", "fail-401", "fail-404", "fail-422", "fail-429", "fail-500", "fail-503", "context-length",
            "leak-key")


@pytest.fixture(scope="module")
def fake():
    with FakeAI21(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway: Jamba and Jurassic deployments at the fake, one Jamba taking key and base from env."""
    def deployment(name, model):
        return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, "api_key": KEY}}

    models = [deployment("jamba", "ai21/jamba-large"), deployment("j2", "ai21/j2-ultra"),
              {"model_name": "jamba-env", "litellm_params": {"model": "jamba-mini"}}]
    models += [deployment(name, f"ai21/{name}") for name in TRIGGERS]
    tmp = tmp_path_factory.mktemp("gw-ai21")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models}))
    gw = GatewayProcess(["--config", str(path)],
                        {"AI21_API_KEY": KEY, "AI21_API_BASE": fake.url + "/studio/v1"}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    log = gw.log()
    gw.stop()
    assert KEY not in log, "the upstream key must never be logged"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0, timeout=20)


def last_request(fake):
    return fake.requests[-1]


def test_chat(client, fake):
    resp = client.chat.completions.create(model="jamba", messages=[{"role": "system", "content": "be brief"}, *HELLO],
                                          temperature=0.5, top_p=0.9, stop="##", seed=3, max_tokens=64)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)
    req = last_request(fake)
    assert req["path"] == "/studio/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["json"] == {"model": "jamba-large", "messages": [{"role": "system", "content": "be brief"}, *HELLO],
                           "temperature": 0.5, "top_p": 0.9, "stop": ["##"], "seed": 3, "max_tokens": 64,
                           "stream": False}


def test_env_key_and_base(client, fake):
    resp = client.chat.completions.create(model="jamba-env", messages=HELLO)
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello there"
    assert last_request(fake)["json"]["model"] == "jamba-mini"


def test_n_choices_and_length(client):
    resp = client.chat.completions.create(model="jamba", messages=HELLO, n=2, max_tokens=2)
    assert [c.index for c in resp.choices] == [0, 1]
    assert all(c.finish_reason == "length" and c.message.content == "Hello from" for c in resp.choices)


def test_text_parts_are_flattened(client, fake):
    client.chat.completions.create(model="jamba", messages=[{"role": "user", "content": [
        {"type": "text", "text": "part one"}, {"type": "text", "text": " part two"}]}])
    assert last_request(fake)["json"]["messages"] == [{"role": "user", "content": "part one part two"}]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream(client, include_usage):
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    text, finish, usage = [], None, None
    for chunk in client.chat.completions.create(model="jamba", messages=HELLO, stream=True, **options):
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == ANSWER_PREFIX + "hello there"
    assert finish == "stop"
    if include_usage:
        assert (usage.prompt_tokens, usage.completion_tokens) == (2, 6)
    else:
        assert usage is None


def test_tools_round_trip(client, fake):
    first = client.chat.completions.create(model="jamba", tools=TOOLS,
                                           messages=[{"role": "user", "content": "weather in Paris?"}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    final = client.chat.completions.create(model="jamba", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"}, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}])
    assert final.choices[0].message.content == TOOL_PREFIX + "18C and sunny"
    sent = last_request(fake)["json"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[1]["content"] == ""
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}


def test_tool_call_stream(client):
    args, names, ids, finish = "", set(), set(), None
    for chunk in client.chat.completions.create(model="jamba", tools=TOOLS, stream=True,
                                                messages=[{"role": "user", "content": "weather?"}]):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                assert piece.index == 0
                args += piece.function.arguments or ""
                names.add(piece.function.name)
                ids.add(piece.id)
    assert json.loads(args) == {"location": "Paris"}
    assert names - {None} == {"get_weather"} and len(ids - {None}) == 1
    assert finish == "tool_calls"


def test_image_part_refused_before_any_upstream_call(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="jamba", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert "text only" in info.value.body["message"]
    assert not fake.requests


def test_no_embeddings(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="jamba", input="x")
    assert info.value.body["code"] == "unsupported_endpoint"


def test_completions_through_chat(client):
    resp = client.completions.create(model="jamba", prompt="say hi")
    assert resp.choices[0].text == ANSWER_PREFIX + "say hi"
    pieces = [c.choices[0].text for c in client.completions.create(model="jamba", prompt="say hi", stream=True)
              if c.choices]
    assert "".join(pieces) == ANSWER_PREFIX + "say hi"


def test_jurassic_completions_native(client, fake):
    resp = client.completions.create(model="j2", prompt="Life is like", max_tokens=40, temperature=0, n=2,
                                     presence_penalty=0.5)
    assert resp.object == "text_completion"
    assert [c.text for c in resp.choices] == [J2_PREFIX + "Life is like"] * 2
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 3
    req = last_request(fake)
    assert req["path"] == "/studio/v1/j2-ultra/complete"
    assert req["json"] == {"prompt": "Life is like", "maxTokens": 40, "temperature": 0, "numResults": 2,
                           "presencePenalty": {"scale": 0.5}}


def test_jurassic_chat_through_prompt_and_default_length(client, fake):
    resp = client.chat.completions.create(model="j2", messages=HELLO)
    assert last_request(fake)["json"] == {"prompt": "user: hello there\nassistant:"}
    assert resp.choices[0].message.content == J2_PREFIX + "user: hello there assistant:"
    assert resp.choices[0].finish_reason == "stop"
    # AI21's own default of 16 tokens applies to a longer answer: the gateway does not invent a limit.
    many = " ".join(f"w{i}" for i in range(20))
    cut = client.chat.completions.create(model="j2", messages=[{"role": "user", "content": many}])
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 16


def test_jurassic_refuses_stream_and_tools(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="j2", messages=HELLO, stream=True)
    assert info.value.body["param"] == "stream"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="j2", messages=HELLO, tools=TOOLS)
    assert info.value.body["param"] == "tools"
    assert not fake.requests


@pytest.mark.parametrize("model, exc, status, text", [
    ("fail-400", openai.BadRequestError, 400, "last message must be from the user"),
    ("fail-401", openai.AuthenticationError, 401, "Bad or missing API token"),
    ("fail-404", openai.NotFoundError, 404, "Model not found"),
    ("fail-422", openai.UnprocessableEntityError, 422, "body.temperature: Input should be less than or equal to 2"),
    ("fail-429", openai.RateLimitError, 429, "Too many requests"),
    ("fail-500", openai.InternalServerError, 500, "Internal server error"),
    ("fail-503", openai.InternalServerError, 503, "Service Unavailable"),
    ("context-length", openai.BadRequestError, 400, "context length"),
    ("leak-key", openai.AuthenticationError, 401, "[redacted]"),
])
def test_errors(client, model, exc, status, text):
    expect_error(client, model, HELLO, exc, absent=[KEY], status=status, fragment=text,
                 code="context_length_exceeded" if model == "context-length" else None,
                 retry_after="2" if model == "fail-429" else None)


def test_unsupported_param_refused(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="jamba", messages=HELLO, presence_penalty=0.3)
    assert info.value.body["param"] == "presence_penalty"
    assert not fake.requests
