"""Hugging Face deployments through a real gateway process, against the fake TGI/TEI server."""

import json

import openai
import pytest
import requests
import yaml

from tests.fakes.tgi_server import CHAT_PREFIX
from tests.fakes.tgi_server import FakeTGI
from tests.fakes.tgi_server import fake_embedding
from tests.fakes.tgi_server import generate_answer
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "hf_integration_secret_key_0123456789"
HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeTGI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    fake.legacy_tools = False
    yield


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module: /generate, Messages API, TEI and a wrong-key deployment."""
    def deployment(name, model, **params):
        return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, "api_key": KEY,
                                                       **params}}
    config = {"model_list": [
        deployment("tgi-llama", "huggingface/meta-llama/Meta-Llama-3-8B-Instruct"),
        deployment("tgi-chat", "huggingface/fake-org/fake-model", use_chat_api=True),
        {**deployment("tgi-embed", "huggingface/BAAI/bge-small-en-v1.5", api_base=fake.url + "/embed"),
         "model_info": {"mode": "embedding"}},
        deployment("tgi-wrong-key", "huggingface/fake-org/fake-model", api_key="hf_not_the_key")]}
    tmp = tmp_path_factory.mktemp("gw-hf")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    gw = GatewayProcess(["--config", str(tmp / "config.yaml")], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def last_sent(fake, path):
    return [r for r in fake.requests if r["path"] == path][-1]


def test_chat_via_generate(client, fake):
    resp = client.chat.completions.create(model="tgi-llama", messages=HELLO, temperature=0.5, max_tokens=50, seed=3)
    sent = last_sent(fake, "/generate")
    inputs = sent["json"]["inputs"]
    assert inputs.startswith("<|begin_of_text|><|start_header_id|>system") and "hello there" in inputs
    assert sent["json"]["parameters"] == {"details": True, "max_new_tokens": 50, "temperature": 0.5,
                                          "do_sample": True, "seed": 3, "return_full_text": False}
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert resp.choices[0].message.content == generate_answer(inputs)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == len(generate_answer(inputs).split()) + 1  # + the eos token
    assert resp.model == "meta-llama/Meta-Llama-3-8B-Instruct"


def test_stream_via_generate_stream(client, fake):
    chunks = list(client.chat.completions.create(model="tgi-llama", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    inputs = last_sent(fake, "/generate_stream")["json"]["inputs"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == generate_answer(inputs)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(inputs.split())


def test_stop_sequence_and_n(client):
    for stop in (" prompt", "TG"):  # one ends a token (TGI stops), one does not (the gateway cuts)
        resp = client.chat.completions.create(model="tgi-llama", messages=HELLO, stop=[stop])
        assert resp.choices[0].message.content == generate_answer("").split(stop)[0]
        assert resp.choices[0].finish_reason == "stop"
        stream = list(client.chat.completions.create(model="tgi-llama", messages=HELLO, stop=[stop], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in stream) == resp.choices[0].message.content
        assert stream[-1].choices[0].finish_reason == "stop"
    two = client.chat.completions.create(model="tgi-llama", messages=HELLO, n=2, temperature=0.9)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == two.choices[1].message.content


def test_completions_native_and_through_chat(client, fake):
    resp = client.completions.create(model="tgi-llama", prompt="Once upon a time", max_tokens=40)
    assert resp.choices[0].text == generate_answer("Once upon a time")
    assert last_sent(fake, "/generate")["json"]["inputs"] == "Once upon a time"  # no chat template
    parts = [c.choices[0].text for c in client.completions.create(model="tgi-llama", prompt="Once upon a time",
                                                                  stream=True) if c.choices]
    assert "".join(parts) == resp.choices[0].text
    chat = client.completions.create(model="tgi-chat", prompt="say hi")
    assert chat.choices[0].text == CHAT_PREFIX + "say hi" and chat.object == "text_completion"


def test_messages_api_chat_and_stream(client, fake):
    resp = client.chat.completions.create(model="tgi-chat", messages=HELLO, max_tokens=30)
    assert resp.choices[0].message.content == CHAT_PREFIX + "hello there"
    sent = last_sent(fake, "/v1/chat/completions")["json"]
    assert sent["messages"] == HELLO and sent["max_tokens"] == 30 and sent["model"] == "fake-org/fake-model"
    chunks = list(client.chat.completions.create(model="tgi-chat", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CHAT_PREFIX + "hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize("legacy", [False, True])
def test_tools_round_trip(client, fake, legacy):
    fake.legacy_tools = legacy
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    resp = client.chat.completions.create(model="tgi-chat", messages=messages, tools=TOOLS)
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls" and resp.choices[0].message.content is None
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    assert call.id.startswith("call_")
    stream = list(client.chat.completions.create(model="tgi-chat", messages=messages, tools=TOOLS, stream=True))
    deltas = [c.choices[0].delta.tool_calls[0] for c in stream if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    assert all(d.index == 0 for d in deltas) and all(d.id is None for d in deltas[1:])
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"location": "Paris"}
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "tool_calls"
    follow = messages + [resp.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "18C, clear"}]
    final = client.chat.completions.create(model="tgi-chat", messages=follow, tools=TOOLS)
    assert final.choices[0].message.content == "Tool said: 18C, clear"
    sent = last_sent(fake, "/v1/chat/completions")["json"]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather" and sent[2]["role"] == "tool"


def test_image_part(client, fake):
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}]
    resp = client.chat.completions.create(model="tgi-chat", messages=[{"role": "user", "content": content}])
    assert resp.choices[0].message.content == CHAT_PREFIX + "what is this (saw 1 image)"
    assert last_sent(fake, "/v1/chat/completions")["json"]["messages"][0]["content"][1] == content[1]
    with pytest.raises(openai.BadRequestError, match="use_chat_api"):
        client.chat.completions.create(model="tgi-llama", messages=[{"role": "user", "content": content}])


def test_embeddings_base64_default_and_float(client, gateway, fake):
    default = client.embeddings.create(model="tgi-embed", input=["alpha", "beta"])
    assert last_sent(fake, "/embed")["json"] == {"inputs": ["alpha", "beta"]}
    floats = client.embeddings.create(model="tgi-embed", input=["alpha", "beta"], encoding_format="float")
    for got, want, text in zip(default.data, floats.data, ["alpha", "beta"]):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-6)
        assert want.embedding == pytest.approx(fake_embedding(text))
    assert default.model == "BAAI/bge-small-en-v1.5" and default.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tgi-llama", input="x")


@pytest.mark.parametrize("model, content, exc, status, fragment", [
    ("tgi-llama", "w " * 1100, openai.BadRequestError, 400, "must have less than 1024 tokens"),
    ("tgi-chat", "w " * 1100, openai.BadRequestError, 400, "must have less than 1024 tokens"),
    ("tgi-llama", "TRIGGER_OVERLOADED", openai.RateLimitError, 429, "Model is overloaded"),
    ("tgi-llama", "TRIGGER_GENERATION_ERROR", openai.APIStatusError, 424, "CUDA out of memory"),
    ("tgi-chat", "TRIGGER_LOADING", openai.InternalServerError, 503, "is currently loading"),
    ("tgi-wrong-key", "hi", openai.AuthenticationError, 401, "Invalid credentials in Authorization header"),
    ("tgi-llama", "TRIGGER_ECHO_AUTH", openai.InternalServerError, 500, "[redacted]"),
])
def test_errors(client, model, content, exc, status, fragment):
    expect_error(client, model, [{"role": "user", "content": content}], exc, absent=[KEY], status=status,
                 fragment=fragment, code="context_length_exceeded" if status == 400 else None,
                 retry_after="20" if model == "tgi-chat" and status == 503 else None)


def test_errors_inside_streams(client):
    got = []
    with pytest.raises(openai.APIError, match="connection lost"):
        for chunk in client.chat.completions.create(model="tgi-llama", stream=True,
                                                    messages=[{"role": "user", "content": "TRIGGER_STREAM_ERROR"}]):
            got.append(chunk)
    assert any(c.choices and c.choices[0].delta.content for c in got)
    with pytest.raises(openai.APIError, match="context_length_exceeded|must have less than"):
        list(client.chat.completions.create(model="tgi-llama", stream=True,
                                            messages=[{"role": "user", "content": "w " * 1100}]))


def test_refused_parameters(client, gateway):
    with pytest.raises(openai.BadRequestError, match="no tool support"):
        client.chat.completions.create(model="tgi-llama", messages=HELLO, tools=TOOLS)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="tgi-llama", messages=HELLO, presence_penalty=0.5)
    raw = requests.post(gateway.url + "/chat/completions",
                        json={"model": "tgi-chat", "messages": HELLO, "n": 2}, timeout=10)
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "n"
    assert KEY not in raw.text
