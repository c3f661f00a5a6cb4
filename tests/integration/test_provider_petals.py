"""Petals deployments through a real gateway process, against the fake Petals backend."""

from urllib.parse import parse_qs

import openai
import pytest
import requests
import yaml

from tests.fakes.petals_server import FakePetals
from tests.fakes.petals_server import petals_answer
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "key-petals-integration-0123456789"
HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake():
    with FakePetals() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    yield


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway for the module: a server-root api_base, a full generate URL, an unknown model."""
    def deployment(name, model, **params):
        return {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url, **params}}
    config = {"model_list": [
        deployment("beluga", "petals/petals-team/StableBeluga2", api_key=KEY),
        deployment("llama2", "petals/meta-llama/Llama-2-70b-chat-hf",
                   api_base=fake.url + "/api/v1/generate", max_tokens=64),
        deployment("missing", "petals/no/such-model")]}
    tmp = tmp_path_factory.mktemp("gw-petals")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    gw = GatewayProcess(["--config", str(tmp / "config.yaml")], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def sent_form(fake):
    """The form fields of the last generate request, as the backend's request.values reads them."""
    req = fake.requests[-1]
    assert req["path"] == "/api/v1/generate"
    assert req["headers"]["content-type"] == "application/x-www-form-urlencoded"
    return {k: v[0] for k, v in parse_qs(req["raw"].decode()).items()}


def test_chat(client, fake):
    resp = client.chat.completions.create(model="llama2", messages=HELLO)
    form = sent_form(fake)
    assert form["model"] == "meta-llama/Llama-2-70b-chat-hf" and form["max_new_tokens"] == "64"
    assert form["do_sample"] == "0"
    assert form["inputs"] == "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nhello there [/INST]"
    assert resp.choices[0].message.content == petals_answer(form["inputs"])
    assert resp.choices[0].finish_reason == "stop"  # the answer ended with </s>
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.model == "meta-llama/Llama-2-70b-chat-hf"


def test_sampling_length_and_key(client, fake):
    resp = client.chat.completions.create(model="beluga", messages=HELLO, max_tokens=3, temperature=0.6, top_p=0.9)
    form = sent_form(fake)
    assert (form["do_sample"], form["temperature"], form["top_p"], form["max_new_tokens"]) == ("1", "0.6", "0.9", "3")
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert resp.choices[0].message.content == "Hello from fake" and resp.choices[0].finish_reason == "length"
    assert fake.generated[-1]["do_sample"] == "1"  # the backend parsed it as an int


def test_completions(client, fake):
    resp = client.completions.create(model="beluga", prompt="A cat sat on", max_tokens=100)
    assert sent_form(fake)["inputs"] == "A cat sat on"
    assert resp.choices[0].text == " " + petals_answer("A cat sat on")
    assert resp.choices[0].finish_reason == "stop" and resp.object == "text_completion"


def test_what_petals_cannot_do(client, gateway):
    with pytest.raises(openai.BadRequestError, match="streaming") as info:
        client.chat.completions.create(model="beluga", messages=HELLO, stream=True)
    assert info.value.body["param"] == "stream"
    with pytest.raises(openai.BadRequestError, match="embeddings"):
        client.embeddings.create(model="beluga", input="x")
    with pytest.raises(openai.BadRequestError, match="no tool support"):
        client.chat.completions.create(model="beluga", messages=HELLO, tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    with pytest.raises(openai.BadRequestError, match="stop") as info:
        client.chat.completions.create(model="beluga", messages=HELLO, stop=["\n"])
    assert info.value.code == "unsupported_parameter"
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"},
                                          {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]
    with pytest.raises(openai.BadRequestError, match="text only"):
        client.chat.completions.create(model="beluga", messages=image)


@pytest.mark.parametrize("model, content, exc, status, fragment", [
    ("missing", "hi", openai.NotFoundError, 404, "KeyError: 'no/such-model'"),
    ("beluga", "w " * 2000, openai.BadRequestError, 400, "Maximum length exceeded"),
    ("beluga", "TRIGGER_502", openai.InternalServerError, 502, "502 Bad Gateway"),
])
def test_errors(client, model, content, exc, status, fragment):
    expect_error(client, model, [{"role": "user", "content": content}], exc,
                 absent=[KEY, "Traceback", "<html>"], status=status, fragment=fragment,
                 code="context_length_exceeded" if status == 400 else None)


def test_key_never_in_answers(gateway):
    for body in ({"model": "beluga", "messages": HELLO}, {"model": "beluga", "messages": HELLO, "stream": True},
                 {"model": "beluga", "messages": [{"role": "user", "content": "TRIGGER_502"}]}):
        resp = requests.post(gateway.url + "/chat/completions", json=body, timeout=10)
        assert KEY not in resp.text
    models = requests.get(gateway.url + "/v1/models", timeout=10)
    assert models.status_code == 200 and KEY not in models.text
