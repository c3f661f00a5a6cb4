"""SageMaker's pure halves (TGI payloads, answers, PayloadPart streams, errors) against fixtures."""

import json
from pathlib import Path

import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers import aws
from gateway.providers.sagemaker import SageMakerProvider
from gateway.providers.shapes import estimate_tokens
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "sagemaker"
KEYS = {"aws_access_key_id": "AKIAUNITTEST0000", "aws_secret_access_key": "unit/secret+key0123456789",
        "aws_region_name": "us-west-2"}


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION_NAME",
                 "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def load(name):
    return json.loads((FIXTURES / name).read_text())


def make(endpoint, model_info=None, index=0, **params):
    return providers.build(DeploymentConfig(model_name="group", params={
        "model": f"sagemaker/{endpoint}", **KEYS, **params}, model_info=model_info or {}, index=index))


def stream(provider, endpoint, parts, body=None):
    state = provider.new_stream_state(endpoint, body or {"messages": [{"role": "user", "content": "hi"}]})
    chunks = [c for part in parts for c in provider.parse_stream_event(endpoint, part, state)]
    return chunks + provider.end_of_stream(state)


def split(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def content(chunks, endpoint="chat"):
    if endpoint == "chat":
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])


# --- settings -------------------------------------------------------------------------------------

def test_build_and_capabilities():
    provider = make("my-endpoint", model_id="ic-1", aws_sagemaker_allow_zero_temp=False, temperature=0.3)
    assert type(provider) is SageMakerProvider and provider.model == "my-endpoint"
    assert provider.api_base == "https://runtime.sagemaker.us-west-2.amazonaws.com"
    assert provider.inference_component == "ic-1"
    assert provider.defaults == {"temperature": 0.3}  # connection keys never become parameters
    assert provider.supports("chat", True) and provider.supports("completions", True)
    assert not provider.supports("embeddings", False)
    embed = make("my-embedder", model_info={"mode": "embedding"})
    assert embed.supports("embeddings", False)
    assert not embed.supports("chat", False) and not embed.supports("embeddings", True)


def test_half_a_key_pair_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model_list\[5\].litellm_params.aws_secret_access_key"):
        providers.build(DeploymentConfig("g", {"model": "sagemaker/e", "aws_access_key_id": "A"}, {}, 5))


def test_bad_chat_template_is_a_config_error():
    with pytest.raises(ConfigError, match="chat_template"):
        make("e", chat_template="{% for m in messages %}{{ m.content }")


# --- payloads and answers -------------------------------------------------------------------------

def test_chat_payload_and_answer():
    fx = load("chat.json")
    provider = make(fx["endpoint"], **fx["params"])
    assert provider.build_payload("chat", fx["request"]) == fx["payload"]
    assert provider.build_payload("chat", fx["request"], stream=True) == {**fx["payload"], "stream": True}
    answer = provider.parse_response("chat", fx["response"], fx["request"])
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and answer["model"] == fx["endpoint"]
    assert choice["message"] == {"role": "assistant", "content": fx["answer"]["content"]}
    assert choice["finish_reason"] == fx["answer"]["finish_reason"]
    assert answer["usage"]["completion_tokens"] == fx["answer"]["completion_tokens"]
    assert answer["usage"]["prompt_tokens"] == estimate_tokens(len(fx["payload"]["inputs"])) > 0


def test_custom_prompt_template_keys():
    provider = make("e", roles={"system": {"pre_message": "<<SYS>>", "post_message": "<</SYS>>"},
                                "user": {"pre_message": "[U] ", "post_message": "\n"}},
                    initial_prompt_value="BEGIN\n", final_prompt_value="[A]")
    prompt = provider.build_payload("chat", {"messages": [{"role": "system", "content": "s"},
                                                          {"role": "user", "content": "hi"}]})["inputs"]
    assert prompt == "BEGIN\n<<SYS>>s<</SYS>>[U] hi\n[A]"


def test_jinja_chat_template():
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    provider = make("e", chat_template=template, eos_token="</s>")
    prompt = provider.build_payload("chat", {"messages": [{"role": "user", "content": "hi"}]})["inputs"]
    assert prompt == "<|user|>hi</s><|assistant|>"


@pytest.mark.parametrize("case", load("completion.json")["cases"], ids=lambda c: c["finish_reason"] + str(c["request"]))
def test_completions(case):
    provider = make(load("completion.json")["endpoint"])
    assert provider.build_payload("completions", case["request"]) == case["payload"]
    answer = provider.parse_response("completions", case["response"], case["request"])
    assert answer["object"] == "text_completion"
    assert answer["choices"] == [{"index": 0, "text": case["text"], "logprobs": None,
                                  "finish_reason": case["finish_reason"]}]
    assert answer["usage"]["completion_tokens"] == case["completion_tokens"]


def test_zero_temperature_allowed_when_configured():
    params = make("e", aws_sagemaker_allow_zero_temp=True).build_payload(
        "completions", {"prompt": "x", "temperature": 0})["parameters"]
    assert params == {"details": True, "temperature": 0, "do_sample": False}


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2], None])
def test_completions_take_one_prompt_string(prompt):
    with pytest.raises(errors.BadRequestError) as info:
        make("e").build_payload("completions", {"prompt": prompt})
    assert info.value.param == "prompt"


def test_embeddings():
    fx = load("embeddings.json")
    provider = make(fx["endpoint"], model_info={"mode": "embedding"})
    assert provider.build_payload("embeddings", fx["request"]) == fx["payload"]
    for response in fx["responses"]:
        answer = provider.parse_response("embeddings", response, fx["request"])
        assert [d["embedding"] for d in answer["data"]] == fx["vectors"]
        assert answer["usage"]["prompt_tokens"] == sum(estimate_tokens(len(t)) for t in fx["request"]["input"])
    single = provider.parse_response("embeddings", {"embedding": [0.1, 0.2]}, {"input": "one"})
    assert [d["embedding"] for d in single["data"]] == [[0.1, 0.2]]


# --- streams --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", load("stream.json")["part_sizes"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_survives_any_part_split(size, include_usage):
    fx = load("stream.json")
    provider = make(fx["endpoint"])
    body = {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": include_usage}}
    chunks = stream(provider, "chat", split(fx["sse"].encode(), size), body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content(chunks) == fx["content"]  # `</s>` is special: never shown
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [fx["finish_reason"]]
    usage = [c["usage"] for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage) == 1 and usage[0]["completion_tokens"] == fx["completion_tokens"]
        assert chunks[-1]["choices"] == []
    else:
        assert usage == []


def test_completion_stream_without_trailing_newline_finishes_by_length():
    fx = load("stream.json")
    provider = make(fx["endpoint"])
    chunks = stream(provider, "completions", split(fx["length_sse"].encode(), 10),
                    {"prompt": "x", "stream_options": {"include_usage": True}})
    assert all(c["object"] == "text_completion" for c in chunks)
    assert content(chunks, "completions") == "a b"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_stream_without_a_final_event_is_a_cut_stream():
    # TGI's last line carries generated_text / details; a body that ends before it was cut (issue #11
    # item 7): an error, never a complete answer that could be cached and billed as a success.
    data = b'data:{"token":{"id":1,"text":"x","special":false},"generated_text":null,"details":null}\n\n'
    with pytest.raises(errors.UpstreamError) as info:
        stream(make("e"), "chat", [data])
    assert "ended before completion" in info.value.message and info.value.status == 502


def test_plain_json_lines_are_read_too():
    data = b'{"token":{"text":"ok","special":false},"generated_text":"ok","details":null}\n'
    assert content(stream(make("e"), "chat", [data])) == "ok"


def test_in_stream_error_raises():
    fx = load("stream.json")
    with pytest.raises(errors.UpstreamError) as info:
        stream(make(fx["endpoint"]), "chat", [fx["error_sse"].encode()])
    assert "CUDA out of memory" in info.value.message and info.value.status == 502


# --- errors and params ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("errors.json")["http"], ids=lambda c: c["type"] + str(c["want_status"]))
def test_map_error(case):
    provider = make("e")
    headers = {"x-amzn-ErrorType": f"{case['type']}:http://internal.amazon.com/coral/com.amazon.sagemaker/",
               "x-amzn-RequestId": "req-9"}
    err = provider.map_error(case["status"], json.dumps(case["body"]).encode(), headers)
    assert type(err).__name__ == case["class"]
    assert (err.status, err.code) == (case["want_status"], case["code"])
    assert (case["body"].get("message") or "")[:40] in err.message
    assert err.upstream_request_id == "req-9"


def test_model_error_from_a_client_error():
    from botocore.exceptions import ClientError

    fx = load("errors.json")["http"][0]
    response = {"Error": {"Code": "ModelError", "Message": fx["body"]["message"]},
                "ResponseMetadata": {"HTTPStatusCode": 424, "HTTPHeaders": {}}, **fx["body"]}
    err = aws.map_exception(make("e"), ClientError(response, "InvokeEndpoint"), 30)
    assert isinstance(err, errors.ContextWindowExceededError) and err.status == 400


def test_stream_error_event():
    from botocore.exceptions import EventStreamError

    case = load("errors.json")["stream_error"]
    err = aws.map_exception(make("e"), EventStreamError(case["response"], "InvokeEndpointWithResponseStream"), 30)
    assert type(err).__name__ == case["class"] and err.status == case["want_status"]


@pytest.mark.parametrize("param, value", [("tools", [{"type": "function", "function": {"name": "f"}}]),
                                          ("n", 3), ("logprobs", True), ("response_format", {"type": "json_object"})])
def test_unsupported_params(param, value):
    provider = make("e")
    body = {"messages": [], param: value}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param
    assert adapt.check_params(provider, "chat", body, drop_params=True) == {"messages": []}


def test_supported_params_pass():
    body = {"prompt": "x", "temperature": 0.2, "top_p": 0.5, "max_tokens": 3, "stop": "x", "seed": 1, "n": 1}
    assert adapt.check_params(make("e"), "completions", body, drop_params=False) == body


def test_image_parts_are_refused():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}
    with pytest.raises(errors.BadRequestError) as info:
        make("e").build_payload("chat", body)
    assert info.value.status == 400 and "no images" in info.value.message
