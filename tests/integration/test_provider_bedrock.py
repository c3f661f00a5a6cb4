"""Bedrock deployments behind a real gunicorn + gevent gateway (boto3 inside), called with the openai SDK.

The fake verifies every request's SigV4 signature, so each passing call also proves the gateway signed
it with the deployment's credentials.
"""

import base64
import json
import struct

import openai
import pytest
import requests
import yaml

from tests.fakes.aws_server import ACCESS_KEY
from tests.fakes.aws_server import SECRET_KEY
from tests.fakes.aws_server import FakeAWS
from tests.fakes.aws_server import bedrock_answer
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
BEDROCK_API_KEY = "bedrock-api-key-integration-0123"
TRIGGERS = ("fail-validation", "context-length", "fail-access", "fail-notfound", "fail-throttle", "fail-timeout",
            "fail-500", "fail-503", "stream-error")


@pytest.fixture(scope="module")
def fake():
    with FakeAWS(bearer_token=BEDROCK_API_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def deployment(name, model, fake, **extra):
    params = {"model": model, "api_base": fake.url, "aws_access_key_id": ACCESS_KEY,
              "aws_secret_access_key": SECRET_KEY, "aws_region_name": "us-east-1", **extra}
    return {"model_name": name, "litellm_params": params}


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway: Bedrock chat/embedding deployments, one with env credentials, the error triggers."""
    models = [
        deployment("claude", f"bedrock/{CLAUDE}", fake),
        # a bare Bedrock id, credentials and region from the environment, endpoint by LiteLLM's other key
        {"model_name": "nova-env", "litellm_params": {"model": "us.amazon.nova-pro-v1:0",
                                                      "aws_bedrock_runtime_endpoint": fake.url}},
        {"model_name": "claude-api-key", "litellm_params": {"model": f"bedrock/{CLAUDE}", "api_base": fake.url,
                                                            "api_key": BEDROCK_API_KEY}},
        deployment("titan-embed", "bedrock/amazon.titan-embed-text-v2:0", fake),
        deployment("cohere-embed", "bedrock/cohere.embed-english-v3", fake),
        deployment("short-timeout", "bedrock/slow-model", fake, timeout=0.5),
        deployment("wrong-secret", f"bedrock/{CLAUDE}", fake, aws_secret_access_key="not-the-secret-0123"),
    ]
    models += [deployment(name, f"bedrock/{name}", fake) for name in TRIGGERS]
    tmp = tmp_path_factory.mktemp("gw-bedrock")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "router_settings": {"allowed_fails": 1000}}))
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-west-2"}
    gw = GatewayProcess(["--config", str(path)], env, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    log = gw.log()
    gw.stop()
    assert SECRET_KEY not in log and BEDROCK_API_KEY not in log, "a secret reached the gateway's log"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def sent(fake):
    """The body of the last request the fake received."""
    return fake.requests[-1]["json"]


def test_chat(client, fake):
    resp = client.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}, *HELLO], temperature=0.3,
        max_tokens=100, stop=["zzz"])
    choice = resp.choices[0]
    assert choice.message.content == bedrock_answer("hello there")
    assert choice.finish_reason == "stop" and resp.model == CLAUDE
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)
    req = fake.requests[-1]
    assert req["path"] == f"/model/{CLAUDE}/converse"
    assert "/us-east-1/bedrock/aws4_request" in req["headers"]["authorization"]
    assert req["json"]["system"] == [{"text": "be brief"}]
    assert req["json"]["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.3, "stopSequences": ["zzz"]}


def test_env_credentials_bare_model_and_runtime_endpoint(client, fake):
    resp = client.chat.completions.create(model="nova-env", messages=HELLO)
    assert resp.choices[0].message.content == bedrock_answer("hello there")
    req = fake.requests[-1]
    assert req["path"] == "/model/us.amazon.nova-pro-v1:0/converse"
    assert "/us-west-2/bedrock/aws4_request" in req["headers"]["authorization"]


def test_bedrock_api_key_is_sent_as_bearer(client, fake):
    resp = client.chat.completions.create(model="claude-api-key", messages=HELLO)
    assert resp.choices[0].message.content == bedrock_answer("hello there")
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {BEDROCK_API_KEY}"


def test_max_tokens_gives_length(client):
    resp = client.chat.completions.create(model="claude", messages=HELLO, max_tokens=2)
    assert resp.choices[0].message.content == "Hello from" and resp.choices[0].finish_reason == "length"


def test_stream_with_usage(client, fake):
    text, finish, usage = [], None, None
    for chunk in client.chat.completions.create(model="claude", messages=HELLO, stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == bedrock_answer("hello there")
    assert finish == "stop" and (usage.prompt_tokens, usage.total_tokens) == (2, 8)
    assert fake.requests[-1]["path"] == f"/model/{CLAUDE}/converse-stream"


def test_tools_round_trip(client, fake):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="claude", messages=ask, tools=TOOLS, tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    assert sent(fake)["toolConfig"]["toolChoice"] == {"auto": {}}
    history = ask + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    second = client.chat.completions.create(model="claude", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "The tool said: 18C and sunny"
    result = sent(fake)["messages"][-1]["content"][0]["toolResult"]
    assert result == {"toolUseId": call.id, "content": [{"text": "18C and sunny"}]}


def test_parallel_tool_calls_stream(client):
    calls = {}
    finish = None
    for chunk in client.chat.completions.create(model="claude", tools=TOOLS, stream=True, messages=[
            {"role": "user", "content": "weather in Paris and Tokyo"}]):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"name": None, "arguments": ""})
                entry["name"] = delta.function.name or entry["name"]
                entry["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert [json.loads(calls[i]["arguments"]) for i in sorted(calls)] == [{"location": "Paris"}, {"location": "Tokyo"}]
    assert {c["name"] for c in calls.values()} == {"get_weather"}


def test_image_part(client, fake):
    resp = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert f"[images: png {len(base64.b64decode(PNG))} bytes]" in resp.choices[0].message.content
    assert sent(fake)["messages"][0]["content"][1]["image"]["source"]["bytes"] == PNG
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "does not fetch image URLs" in info.value.message


def test_json_mode(client):
    resp = client.chat.completions.create(model="claude", messages=HELLO, response_format={"type": "json_object"})
    assert json.loads(resp.choices[0].message.content) == {"answer": bedrock_answer("hello there")}
    assert resp.choices[0].finish_reason == "stop" and not resp.choices[0].message.tool_calls


def test_completions_through_chat(client, fake):
    resp = client.completions.create(model="claude", prompt="say hi", max_tokens=20)
    assert resp.choices[0].text == bedrock_answer("say hi") and resp.object == "text_completion"
    assert sent(fake)["messages"] == [{"role": "user", "content": [{"text": "say hi"}]}]
    parts = [c.choices[0].text for c in client.completions.create(model="claude", prompt="say hi", stream=True)
             if c.choices]
    assert "".join(parts) == resp.choices[0].text


@pytest.mark.parametrize("model, dims", [("titan-embed", 256), ("cohere-embed", None)])
def test_embeddings_base64_default_and_float(client, gateway, fake, model, dims):
    extra = {"dimensions": dims} if dims else {}
    via_sdk = client.embeddings.create(model=model, input=["a b", "c"], **extra)
    as_float = requests.post(gateway.url + "/v1/embeddings", json={
        "model": model, "input": ["a b", "c"], "encoding_format": "float", **extra}, timeout=20).json()
    assert len(via_sdk.data) == 2 and via_sdk.usage.prompt_tokens == 3
    for got, want in zip(via_sdk.data, as_float["data"]):
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)
        assert len(want["embedding"]) == (dims or 1024)
    raw = requests.post(gateway.url + "/v1/embeddings", timeout=20, json={
        "model": model, "input": "x", "encoding_format": "base64"}).json()["data"][0]["embedding"]
    floats = struct.unpack("<1024f", base64.b64decode(raw))  # base64 of little-endian float32
    assert floats[0] == pytest.approx(requests.post(gateway.url + "/v1/embeddings", json={
        "model": model, "input": "x", "encoding_format": "float"}, timeout=20).json()["data"][0]["embedding"][0])


def test_chat_model_refuses_embeddings(client):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="claude", input="x")


def test_unsupported_param_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=HELLO, seed=3)
    assert info.value.body["param"] == "seed"


@pytest.mark.parametrize("model, exc, status, fragment", [
    ("fail-validation", openai.BadRequestError, 400, "extraneous key [foo]"),
    ("context-length", openai.BadRequestError, 400, "Input is too long"),
    ("fail-access", openai.PermissionDeniedError, 403, "You don't have access"),
    ("fail-notfound", openai.NotFoundError, 404, "Could not resolve the foundation model"),
    ("fail-throttle", openai.RateLimitError, 429, "Too many requests"),
    ("fail-timeout", openai.InternalServerError, 504, "Model has timed out"),
    ("fail-500", openai.InternalServerError, 500, "internal error"),
    ("fail-503", openai.InternalServerError, 503, "unable to process"),
    ("wrong-secret", openai.AuthenticationError, 401, "signature we calculated does not match"),
    ("short-timeout", openai.InternalServerError, 504, "timed out after 0.5s"),
])
def test_errors(client, model, exc, status, fragment):
    expect_error(client, model, HELLO, exc, absent=[SECRET_KEY, "not-the-secret-0123", BEDROCK_API_KEY],
                 status=status, fragment=fragment,
                 code="context_length_exceeded" if model == "context-length" else None)


def test_error_mid_stream_is_the_last_event(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=[
                {"role": "user", "content": "one two three four"}], stream=True):
            received.append(chunk)
    assert received and "The model stream broke." in str(info.value)


def test_no_secret_in_model_listing(gateway):
    for path in ("/v1/models", "/v1/models/claude", "/health/readiness"):
        text = requests.get(gateway.url + path, timeout=10).text
        assert SECRET_KEY not in text and "not-the-secret-0123" not in text and BEDROCK_API_KEY not in text
