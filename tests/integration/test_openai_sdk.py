"""The gateway as a real gunicorn + gevent process, called with the real openai SDK."""

import base64
import struct
import time

import openai
import pytest
import requests

from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

MASTER = "sk-master-integration-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(fake_openai, tmp_path_factory):
    """One gateway with a master key and 2 workers, shared by the module's read-only tests."""
    import yaml

    from tests.integration.conftest import GatewayProcess
    from tests.integration.conftest import free_port

    tmp = tmp_path_factory.mktemp("gw-module")
    cfg = openai_config(fake_openai, master_key=MASTER,
                        extra_models=[{"model_name": "short-timeout", "litellm_params": {
                            "model": "openai/slow", "api_base": fake_openai.url + "/v1",
                            "api_key": fake_openai.api_key, "timeout": 0.5}},
                            {"model_name": "nowhere", "litellm_params": {
                                "model": "openai/x", "api_base": f"http://127.0.0.1:{free_port()}/v1",
                                "api_key": "sk-unused"}}])
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    gw = GatewayProcess(["--config", str(path), "--num_workers", "2"], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    """The openai SDK pointed at the gateway, with retries off so errors surface as they are."""
    return openai.OpenAI(base_url=gateway.url, api_key=MASTER, max_retries=0, timeout=20)


def test_chat_goes_upstream_with_upstream_key(client, fake_openai):
    resp = client.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO, temperature=0.3,
                                          extra_body={"custom_param": {"x": 1}})
    assert resp.choices[0].message.content == "Hello from fake upstream: hello there"
    assert resp.usage.total_tokens > 0
    sent = [r for r in fake_openai.requests if r["path"] == "/v1/chat/completions"][-1]
    assert sent["headers"]["authorization"] == f"Bearer {fake_openai.api_key}"
    assert sent["json"]["model"] == "gpt-3.5-turbo"
    assert sent["json"]["temperature"] == 0.3
    assert sent["json"]["custom_param"] == {"x": 1}  # unknown OpenAI parameters pass through


def test_azure_deployment(client, fake_openai):
    resp = client.chat.completions.create(model="azure-gpt", messages=HELLO)
    assert resp.choices[0].message.content.startswith("Hello from fake upstream")
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert sent["query"]["api-version"] in ("2024-02-01", ["2024-02-01"])
    assert sent["headers"]["api-key"] == fake_openai.azure_key
    assert "authorization" not in sent["headers"]


def test_tool_calls_round_trip(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]
    resp = client.chat.completions.create(
        model="gpt-3.5-turbo", tools=tools,
        messages=[{"role": "user", "content": "what is the weather in Paris"}])
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert resp.choices[0].finish_reason == "tool_calls"


def test_stream_arrives_chunk_by_chunk(client, fake_openai):
    fake_openai.stream_interval = 0.15
    fake_openai.slow_stream_chunks = 12
    started = time.monotonic()
    arrivals = []
    with client.chat.completions.create(model="slow-stream", messages=HELLO, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started
    assert len(arrivals) >= 10
    # The first words reach the client while the upstream is still producing the rest.
    assert arrivals[0] < total - 1.0, (arrivals, total)


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "azure-gpt"])
def test_stream_with_usage(client, model):
    text = []
    usage = None
    finish = None
    stream = client.chat.completions.create(model=model, messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == "Hello from fake upstream: hello there"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_completions_plain_and_stream(client):
    resp = client.completions.create(model="gpt-3.5-turbo", prompt="say hi", max_tokens=20)
    assert resp.choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(
        model="gpt-3.5-turbo", prompt="say hi", stream=True) if c.choices]
    assert "".join(parts) == resp.choices[0].text


def test_embeddings_base64_default_and_float(client, gateway):
    via_sdk = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    as_float = requests.post(gateway.url + "/v1/embeddings", headers={"Authorization": f"Bearer {MASTER}"},
                             json={"model": "text-embedding-3-small", "input": ["a", "b"],
                                   "encoding_format": "float"}).json()
    assert len(via_sdk.data) == 2
    for got, want in zip(via_sdk.data, as_float["data"]):
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["gpt-3.5-turbo", "azure-gpt", "text-embedding-3-small"]
    assert client.models.retrieve("azure-gpt").id == "azure-gpt"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


@pytest.mark.parametrize("model, exc, status", [
    ("fail-400", openai.BadRequestError, 400),
    ("fail-401", openai.AuthenticationError, 401),
    ("fail-403", openai.PermissionDeniedError, 403),
    ("fail-404", openai.NotFoundError, 404),
    ("fail-429", openai.RateLimitError, 429),
    ("fail-500", openai.InternalServerError, 500),
    ("fail-503", openai.InternalServerError, 503),
    ("malformed", openai.InternalServerError, 502),
    ("short-timeout", openai.InternalServerError, 504),
    ("nowhere", openai.InternalServerError, 502),
    ("no-such-model", openai.NotFoundError, 404),
])
def test_typed_errors(client, model, exc, status, fake_openai):
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=HELLO)
    err = info.value
    assert err.status_code == status
    body = err.body
    assert set(body) >= {"message", "type", "param", "code"}
    assert fake_openai.api_key not in str(body) and MASTER not in str(body)
    assert err.response.headers.get("x-request-id")
    if status in (502, 504) and model != "malformed":
        assert model in body["message"] and "deployment" in body["message"]
    if model == "fail-429":
        assert err.response.headers.get("retry-after") == "1"


def test_timeout_and_connection_error_are_distinct(client):
    with pytest.raises(openai.InternalServerError) as slow:
        client.chat.completions.create(model="short-timeout", messages=HELLO)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="nowhere", messages=HELLO)
    assert (slow.value.status_code, slow.value.body["code"]) == (504, "upstream_timeout")
    assert (down.value.status_code, down.value.body["code"]) == (502, "upstream_connection_error")


def test_context_length_error_code(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="context-length", messages=HELLO)
    assert info.value.code == "context_length_exceeded"


def test_error_after_stream_started_is_final_event(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            received.append(chunk)
    assert received, "the chunks before the error reach the client"
    assert "upstream stream broke" in str(info.value)


def test_master_key_required(gateway):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO)
        assert info.value.status_code == 401
    resp = requests.post(gateway.url + "/chat/completions", json={"messages": HELLO})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "invalid_request_error"
    assert requests.get(gateway.url + "/health/liveliness").status_code == 200


def test_client_disconnect_closes_upstream(gateway, fake_openai):
    fake_openai.stream_interval = 0.1
    fake_openai.slow_stream_chunks = 200
    with requests.post(gateway.url + "/chat/completions", stream=True,
                       headers={"Authorization": f"Bearer {MASTER}"},
                       json={"model": "slow-stream", "messages": HELLO, "stream": True}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        got = [next(lines) for _ in range(4)]
        assert any(line.startswith(b"data: ") for line in got)
    # The upstream sees its client (the gateway) go away long before its 20 s stream would end.
    assert fake_openai.wait_for_disconnect(5), fake_openai.disconnects
    assert fake_openai.disconnects[-1]["chunks_sent"] < 100


def test_request_body_limits_through_gunicorn(start_gateway):
    gw = start_gateway({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                        "general_settings": {"max_request_size_mb": 0.01}})
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 20000 + b'"}]}'
    resp = requests.post(gw.url + "/chat/completions", data=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"

    def chunked():
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    resp = requests.post(gw.url + "/chat/completions", data=chunked())
    assert resp.status_code == 413, resp.text
    small = requests.post(gw.url + "/chat/completions", data=(p for p in [b'{"messages": [{"role":',
                                                                          b' "user", "content": "hi"}]}']))
    assert small.status_code == 200, small.text


def test_no_master_key_accepts_any_key(start_gateway, fake_openai):
    gw = start_gateway(openai_config(fake_openai))
    anyone = openai.OpenAI(base_url=gw.url, api_key="anything", max_retries=0)
    assert anyone.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO).choices
    assert anyone.embeddings.create(model="text-embedding-3-small", input="x").data


def test_demo_model_over_gunicorn(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    reply = c.chat.completions.create(model="demo", messages=HELLO).choices[0].message.content
    assert reply.endswith("You said: hello there")
    vec = c.embeddings.create(model="demo", input="abc").data[0].embedding
    raw = requests.post(gw.url + "/embeddings", json={"input": "abc", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<16f", base64.b64decode(raw["data"][0]["embedding"]))
    assert vec == pytest.approx(list(decoded))
