"""SageMaker (TGI and embedding endpoints) behind a real gunicorn + gevent gateway, via the openai SDK.

The fake verifies every request's SigV4 signature (service `sagemaker`), streams TGI's SSE lines cut
across PayloadPart events, and rejects what TGI rejects (temperature 0, top_p 1).
"""


import openai
import pytest
import requests
import yaml

from tests.fakes.aws_server import ACCESS_KEY
from tests.fakes.aws_server import SECRET_KEY
from tests.fakes.aws_server import FakeAWS
from tests.fakes.aws_server import sagemaker_answer
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import expect_error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
LLAMA = "jumpstart-dft-meta-textgeneration-llama-2-7b-f"


@pytest.fixture(scope="module")
def fake():
    with FakeAWS() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def deployment(name, endpoint, fake, model_info=None, **extra):
    params = {"model": f"sagemaker/{endpoint}", "api_base": fake.url, "aws_access_key_id": ACCESS_KEY,
              "aws_secret_access_key": SECRET_KEY, "aws_region_name": "eu-west-1", **extra}
    entry = {"model_name": name, "litellm_params": params}
    if model_info:
        entry["model_info"] = model_info
    return entry


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """One gateway: a Llama-2 TGI endpoint, a custom-template one, an embedding endpoint, the triggers."""
    models = [
        deployment("llama", LLAMA, fake, hf_model_name="meta-llama/Llama-2-7b-chat-hf"),
        deployment("custom", "my-tgi-endpoint", fake, model_id="my-inference-component",
                   roles={"user": {"pre_message": "### User: ", "post_message": "\n"},
                          "system": {"pre_message": "### System: ", "post_message": "\n"}},
                   final_prompt_value="### Assistant:"),
        deployment("embedder", "my-embed-endpoint", fake, model_info={"mode": "embedding"}),
        deployment("model-error", "model-error", fake),
        deployment("missing", "missing-endpoint", fake),
        deployment("fail-503", "fail-503", fake),
        deployment("stream-error", "stream-error-endpoint", fake),
    ]
    tmp = tmp_path_factory.mktemp("gw-sagemaker")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "router_settings": {"allowed_fails": 1000}}))
    gw = GatewayProcess(["--config", str(path)], {}, tmp / "gw.log", free_port())
    gw.wait_ready()
    yield gw
    log = gw.log()
    gw.stop()
    assert SECRET_KEY not in log, "the AWS secret key reached the gateway's log"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=20)


def last(fake):
    return fake.requests[-1]


def test_chat_uses_the_model_family_template(client, fake):
    resp = client.chat.completions.create(model="llama", messages=HELLO, max_tokens=50, temperature=0.7,
                                          top_p=0.9, seed=4)
    req = last(fake)
    prompt = req["json"]["inputs"]
    assert prompt == "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nhello there [/INST]"
    assert req["json"]["parameters"] == {"details": True, "max_new_tokens": 50, "temperature": 0.7,
                                         "do_sample": True, "top_p": 0.9, "seed": 4}
    assert req["path"] == f"/endpoints/{LLAMA}/invocations"
    assert "/eu-west-1/sagemaker/aws4_request" in req["headers"]["authorization"]
    choice = resp.choices[0]
    assert choice.message.content == sagemaker_answer(prompt) and choice.finish_reason == "stop"
    assert resp.usage.completion_tokens == len(sagemaker_answer(prompt).split()) + 1  # + the eos token
    assert resp.usage.prompt_tokens > 0 and resp.model == LLAMA


def test_custom_template_and_inference_component(client, fake):
    client.chat.completions.create(model="custom", messages=HELLO)
    req = last(fake)
    assert req["json"]["inputs"] == "### System: You are terse.\n### User: hello there\n### Assistant:"
    assert req["headers"]["x-amzn-sagemaker-inference-component"] == "my-inference-component"


def test_temperature_zero_and_top_p_one_are_what_tgi_accepts(client, fake):
    resp = client.chat.completions.create(model="llama", messages=HELLO, temperature=0, top_p=1)
    assert resp.choices[0].message.content.startswith("Hello from fake sagemaker")
    assert last(fake)["json"]["parameters"] == {"details": True, "do_sample": False}


def test_stop_and_length(client):
    stopped = client.chat.completions.create(model="llama", messages=HELLO, stop=["sagemaker"])
    assert stopped.choices[0].message.content == "Hello from fake " and stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(model="llama", messages=HELLO, max_tokens=2)
    assert cut.choices[0].message.content == "Hello from" and cut.choices[0].finish_reason == "length"


def test_stream_with_usage(client, fake):
    whole = client.chat.completions.create(model="llama", messages=HELLO).choices[0].message.content
    text, finish, usage = [], None, None
    for chunk in client.chat.completions.create(model="llama", messages=HELLO, stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == whole and finish == "stop"
    assert usage.completion_tokens == len(whole.split()) + 1 and usage.prompt_tokens > 0
    req = last(fake)
    assert req["path"] == f"/endpoints/{LLAMA}/invocations-response-stream" and req["json"]["stream"] is True


def test_completions_native(client, fake):
    resp = client.completions.create(model="llama", prompt="The capital of France is", max_tokens=30)
    assert last(fake)["json"]["inputs"] == "The capital of France is"
    assert resp.choices[0].text == sagemaker_answer("The capital of France is")
    parts, finish = [], None
    for chunk in client.completions.create(model="llama", prompt="The capital of France is", stream=True):
        for choice in chunk.choices:
            parts.append(choice.text)
            finish = choice.finish_reason or finish
    assert "".join(parts) == resp.choices[0].text and finish == "stop"


def test_embeddings_base64_default_and_float(client, gateway, fake):
    via_sdk = client.embeddings.create(model="embedder", input=["a b", "c"])
    assert last(fake)["json"] == {"text_inputs": ["a b", "c"]}
    as_float = requests.post(gateway.url + "/v1/embeddings", json={
        "model": "embedder", "input": ["a b", "c"], "encoding_format": "float"}, timeout=20).json()
    assert len(via_sdk.data) == 2
    for got, want in zip(via_sdk.data, as_float["data"]):
        assert len(want["embedding"]) == 384
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)


def test_endpoint_kinds_do_not_mix(client):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="llama", input="x")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="embedder", messages=HELLO)


def test_tools_and_images_are_refused_with_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="llama", messages=HELLO, tools=TOOLS)
    assert info.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="llama", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is it"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert "no images" in info.value.message


@pytest.mark.parametrize("model, exc, status, fragment, code", [
    ("model-error", openai.BadRequestError, 400, "must be <= 2048", "context_length_exceeded"),
    ("missing", openai.NotFoundError, 404, "Endpoint missing-endpoint of account", None),
    ("fail-503", openai.InternalServerError, 503, "The service is unavailable", None),
])
def test_errors(client, model, exc, status, fragment, code):
    err = expect_error(client, model, HELLO, exc, absent=[SECRET_KEY], status=status, fragment=fragment)
    assert err.code == code


def test_error_mid_stream_is_the_last_event(client):
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            received.append(chunk)
    assert received and "Your model stream was interrupted." in str(info.value)
