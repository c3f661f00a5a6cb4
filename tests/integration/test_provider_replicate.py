"""Replicate through a real gateway (gunicorn + gevent) in front of the fake Replicate API, with the openai SDK."""

import openai
import pytest
import requests

from tests.fakes.replicate_server import ANSWER_PREFIX
from tests.fakes.replicate_server import FakeReplicate
from tests.integration.conftest import expect_error

pytestmark = pytest.mark.integration

TOKEN = "r8_integration_token_5b2e7d1c9a"
VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
HELLO = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake():
    with FakeReplicate(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module; the token comes from REPLICATE_API_TOKEN beside REPLICATE_API_BASE."""
    import yaml

    from tests.integration.conftest import GatewayProcess
    from tests.integration.conftest import free_port

    def dep(name, model, **extra):
        return {"model_name": name, "litellm_params": {"model": model, **extra}}

    config = {"model_list": [
        dep("llama", "replicate/meta/meta-llama-3-8b-instruct", supports_system_prompt=True),
        dep("pinned", f"replicate/replicate/hello-world:{VERSION}"),
        dep("deployed", "replicate/deployments/acme/my-llm"),
        dep("llava", "replicate/yorickvp/llava-13b"),
        dep("polled", "replicate/acme/no-stream"),
        dep("foreign", "replicate/acme/foreign-urls"),
        dep("missing", "replicate/acme/missing"),
        dep("throttled", "replicate/acme/throttled"),
        dep("bad-input", "replicate/acme/bad-input"),
        dep("fails", "replicate/acme/fails"),
        dep("stream-error", "replicate/acme/stream-error"),
        dep("echo-key", "replicate/acme/echo-key"),
    ]}
    tmp = tmp_path_factory.mktemp("gw-replicate")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"REPLICATE_API_BASE": fake.url + "/v1", "REPLICATE_API_TOKEN": TOKEN}
    gw = GatewayProcess(["--config", str(path)], env, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()
    assert TOKEN not in gw.log_path.read_text(errors="replace")


@pytest.fixture
def client(gateway, fake):
    fake.reset()
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def creates(fake):
    return [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith("/predictions")]


def text_of(chunks):
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_chat(client, fake):
    resp = client.chat.completions.create(model="llama", messages=HELLO, max_tokens=40, temperature=0.5,
                                          top_p=0.9, stop=["User:"], seed=5)
    content = resp.choices[0].message.content
    assert content.startswith(ANSWER_PREFIX) and content.endswith("words received")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 6 and resp.usage.prompt_tokens > 0
    sent = creates(fake)[-1]
    assert sent["path"] == "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert sent["headers"]["prefer"].startswith("wait=")
    inputs = sent["json"]["input"]
    assert inputs["system_prompt"] == "You are a pirate."
    assert "hello there" in inputs["prompt"] and "pirate" not in inputs["prompt"]
    assert {k: inputs[k] for k in ("max_new_tokens", "temperature", "top_p", "stop_sequences", "seed")} == {
        "max_new_tokens": 40, "temperature": 0.5, "top_p": 0.9, "stop_sequences": "User:", "seed": 5}


def test_stream_matches_chat_with_usage(client, fake):
    full = client.chat.completions.create(model="llama", messages=HELLO).choices[0].message.content
    chunks = list(client.chat.completions.create(model="llama", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert text_of(chunks) == full
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert any(r["path"].startswith("/v1/streams/") for r in fake.requests)
    assert creates(fake)[-1]["json"]["stream"] is True


def test_stream_by_polling_when_the_model_has_no_stream_url(client, fake):
    full = client.chat.completions.create(model="polled", messages=HELLO).choices[0].message.content
    chunks = list(client.chat.completions.create(model="polled", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert text_of(chunks) == full
    assert chunks[-1].usage.completion_tokens == 6
    assert not any(r["path"].startswith("/v1/streams/") for r in fake.requests)


def test_foreign_urls_are_not_followed(client, fake):
    chunks = list(client.chat.completions.create(model="foreign", messages=HELLO, stream=True))
    assert text_of(chunks).startswith(ANSWER_PREFIX)
    polls = [r["path"] for r in fake.requests if r["method"] == "GET"]
    assert polls and all(p.startswith("/v1/predictions/") for p in polls)


def test_pinned_version_and_deployment(client, fake):
    assert client.chat.completions.create(model="pinned", messages=HELLO).choices[0].message.content
    assert creates(fake)[-1]["path"] == "/v1/predictions"
    assert creates(fake)[-1]["json"]["version"] == VERSION
    assert client.chat.completions.create(model="deployed", messages=HELLO).choices[0].message.content
    assert creates(fake)[-1]["path"] == "/v1/deployments/acme/my-llm/predictions"


def test_image_part(client, fake):
    url = "https://replicate.delivery/pbxt/cat.png"
    resp = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert resp.choices[0].message.content.endswith("with an image")
    assert creates(fake)[-1]["json"]["input"]["image"] == url


def test_completions_native(client, fake):
    resp = client.completions.create(model="deployed", prompt="one two three", max_tokens=3)
    assert resp.choices[0].text == "Hello from Replicate: "
    assert creates(fake)[-1]["json"]["input"] == {"prompt": "one two three", "max_new_tokens": 3}
    streamed = list(client.completions.create(model="llama", prompt="one two three", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == ANSWER_PREFIX + "3 words received"


def test_tools_and_embeddings_are_refused(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="llama", messages=HELLO, tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    assert exc.value.param == "tools"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="llama", input="x")


@pytest.mark.parametrize("model, exc_type, text", [
    ("missing", openai.NotFoundError, "The requested resource could not be found."),
    ("throttled", openai.RateLimitError, "Request was throttled"),
    ("bad-input", openai.UnprocessableEntityError, "Input validation failed"),
    ("fails", openai.InternalServerError, "CUDA out of memory"),
    ("echo-key", openai.AuthenticationError, "was revoked"),
])
def test_errors(client, model, exc_type, text):
    expect_error(client, model, HELLO, exc_type, absent=[TOKEN], fragment=text,
                 retry_after="7" if model == "throttled" else None)


def test_errors_in_streams(client):
    with pytest.raises(openai.APIError) as exc:
        list(client.chat.completions.create(model="stream-error", messages=HELLO, stream=True))
    assert "CUDA error" in str(exc.value)
    with pytest.raises(openai.APIError) as exc:
        list(client.chat.completions.create(model="fails", messages=HELLO, stream=True))
    assert "CUDA out of memory" in str(exc.value)


def test_key_never_in_answers(gateway):
    listing = requests.get(gateway.url + "/v1/models", timeout=10).text
    assert "llama" in listing and TOKEN not in listing
