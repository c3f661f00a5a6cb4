"""Hugging Face (TGI / Messages API / TEI) translation halves, table-tested from documented examples."""

import json
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.huggingface import HuggingFaceProvider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "huggingface"
ENV = ("HUGGINGFACE_API_KEY", "HF_TOKEN", "HF_API_BASE", "HUGGINGFACE_API_BASE")
LOCAL = {"model": "huggingface/meta-llama/Meta-Llama-3-8B-Instruct", "api_base": "http://0.0.0.0:8001"}
CHAT = {"model": "huggingface/tgi", "api_base": "http://tgi:8080", "use_chat_api": True}
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def cases(name):
    data = json.loads((FIXTURES / name).read_text())
    return pytest.mark.parametrize("case", data, ids=[c["name"] for c in data])


@pytest.fixture(autouse=True)
def _no_hf_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def make(params, model_info=None):
    """The provider for one deployment, built through the registry as the router does."""
    return providers.build(DeploymentConfig(model_name="g", params=dict(params), model_info=model_info or {},
                                            index=3))


def prepared(provider, endpoint, request, drop_params=False, add_function_to_prompt=False):
    """The body as the router hands it to the provider: tools, params check, defaults."""
    settings = SimpleNamespace(drop_params=drop_params, add_function_to_prompt=add_function_to_prompt)
    if endpoint == "chat":
        request = adapt.prepare_tools(provider, request, settings)
    request = adapt.check_params(provider, endpoint, request, drop_params)
    return provider.prepare_body(endpoint, request)


def assert_subset(expected, actual, path="$"):
    """Every key/value in `expected` is in `actual` (lists: same length, item by item)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing in {actual!r}"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def run_stream(provider, endpoint, body, events):
    """Feed upstream events; return the chunks and whether the translator said the stream ended."""
    state = provider.new_stream_state(endpoint, body)
    chunks, ended = [], False
    for event in events + ["[DONE]"]:
        raw = event.encode() if isinstance(event, str) else orjson.dumps(event)
        out = provider.parse_stream_event(endpoint, raw, state)
        if out is None:
            ended = True
            break
        chunks.extend(out)
    return chunks, ended


def collect(chunks, endpoint):
    """Join a translated stream: text, last finish reason, usage, tool calls by index."""
    text, finish, usage, calls = "", None, None, {}
    for chunk in chunks:
        if not chunk["choices"]:
            usage = chunk["usage"]
            continue
        choice = chunk["choices"][0]
        if endpoint == "chat":
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(str(call["index"]), {"name": "", "arguments": "", "ids": []})
                if "id" in call:
                    slot["ids"].append(call["id"])
                slot["name"] += call.get("function", {}).get("name") or ""
                slot["arguments"] += call.get("function", {}).get("arguments") or ""
        else:
            text += choice["text"]
        finish = choice["finish_reason"] or finish
    return text, finish, usage, calls


# --- request and answer tables --------------------------------------------------------------------

@cases("generate.json")
def test_generate(case):
    check_request_and_answer(case)


@cases("chat_api.json")
def test_chat_api(case):
    check_request_and_answer(case)


@cases("embeddings.json")
def test_embeddings(case):
    check_request_and_answer(case)


def check_request_and_answer(case):
    provider = make(case["deployment"], case.get("model_info"))
    body = prepared(provider, case["endpoint"], case["request"])
    req = provider.build_request(case["endpoint"], body, case["stream"])
    assert (req.method, req.url) == ("POST", case["upstream_request"]["url"])
    assert orjson.loads(req.body) == case["upstream_request"]["json"]
    assert req.headers["Content-Type"] == "application/json"
    assert_subset(case["upstream_request"].get("headers", {}), req.headers)
    answer = provider.parse_response(case["endpoint"], case["upstream_response"], body)
    assert_subset(case["expected"], answer)
    for choice in answer.get("choices") or []:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            assert call["id"].startswith("call_") and len(call["id"]) > 8  # placeholder ids replaced


@cases("generate_stream.json")
def test_generate_stream(case):
    check_stream(case)


@cases("chat_api_stream.json")
def test_chat_api_stream(case):
    check_stream(case)


def check_stream(case):
    provider = make(case["deployment"], case.get("model_info"))
    endpoint = case["endpoint"]
    body = prepared(provider, endpoint, case["request"])
    req = provider.build_request(endpoint, body, True)
    assert req.url == case["upstream_request"]["url"]
    assert orjson.loads(req.body) == case["upstream_request"]["json"]
    chunks, ended = run_stream(provider, endpoint, body, case["upstream_events"])
    assert ended, "the translator reports the end of the stream"
    text, finish, usage, calls = collect(chunks, endpoint)
    expected = case["expected_stream"]
    assert text == expected["text"]
    assert finish == expected["finish_reason"]
    if "usage" in expected:
        assert usage == expected["usage"]
    assert len({c["id"] for c in chunks}) == 1
    kind = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
    assert all(c["object"] == kind for c in chunks)
    if endpoint == "chat":
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if body.get("stream_options", {}).get("include_usage"):
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]
    else:
        assert all(c["choices"] for c in chunks)
    for index, call in expected.get("tool_calls", {}).items():
        got = calls[index]
        assert got["name"] == call["name"] and got["arguments"] == call["arguments"]
        assert len(got["ids"]) == 1 and got["ids"][0].startswith("call_")  # id only on the first delta


# --- errors -----------------------------------------------------------------------------------------

ERRORS = json.loads((FIXTURES / "errors.json").read_text())


@pytest.mark.parametrize("case", ERRORS["http"], ids=[c["name"] for c in ERRORS["http"]])
def test_map_error(case):
    provider = make({**LOCAL, "api_key": "hf_secret_key_for_scrub_test"})
    raw = case["raw"].encode() if "raw" in case else orjson.dumps(case["body"])
    err = provider.map_error(case["status"], raw, case.get("headers", {}))
    check_error(err, case["expected"])
    assert err.upstream_status == case["status"]


@pytest.mark.parametrize("case", ERRORS["stream"], ids=[c["name"] for c in ERRORS["stream"]])
def test_stream_error_events(case):
    for params in (LOCAL, CHAT):
        provider = make(params)
        body = prepared(provider, "chat", {"messages": HI, "stream": True})
        state = provider.new_stream_state("chat", body)
        with pytest.raises(errors.GatewayError) as info:
            provider.parse_stream_event("chat", orjson.dumps(case["event"]), state)
        check_error(info.value, case["expected"])


def check_error(err, expected):
    assert isinstance(err, errors.GatewayError)
    assert err.status == expected["status"]
    if "code" in expected:
        assert err.code == expected["code"]
    if "type" in expected:
        assert err.type == expected["type"]
    if "message" in expected:
        assert expected["message"] in err.message
    if "retry_after" in expected:
        assert err.headers.get("Retry-After") == expected["retry_after"]
    if "absent" in expected:
        assert expected["absent"] not in err.message
    assert "deployment: g -> huggingface/" in err.message


def test_error_answer_with_200_is_an_error():
    provider = make(LOCAL)
    with pytest.raises(errors.UpstreamError, match="currently loading"):
        provider.parse_response("chat", {"error": "Model x is currently loading"}, {"messages": HI})


# --- deployment resolution ------------------------------------------------------------------------

def test_model_strings_and_modes():
    assert providers.split_model("huggingface/meta-llama/Llama-2-7b") == ("huggingface", "meta-llama/Llama-2-7b")
    url = make({"model": "huggingface/https://xyz.us-east-1.aws.endpoints.huggingface.cloud"})
    assert url.generate_url == "https://xyz.us-east-1.aws.endpoints.huggingface.cloud/generate"
    assert url.mode == "generate" and not url.compat
    assert make({**LOCAL, "api_base": "http://h:1/generate"}).stream_url == "http://h:1/generate_stream"
    assert make({**LOCAL, "api_base": "http://h:1/v1/"}).chat_url == "http://h:1/v1/chat/completions"
    assert make({**LOCAL, "api_base": "http://h:1/v1/chat/completions"}).mode == "chat_api"
    assert make({**LOCAL, "api_base": "http://h:1/v1", "use_chat_api": False}).mode == "generate"
    assert make({**LOCAL, "use_chat_api": "yes"}).chat_url == "http://0.0.0.0:8001/v1/chat/completions"
    with pytest.raises(ConfigError, match=r"model_list\[3\].litellm_params.model: .*conversational"):
        make({"model": "huggingface/conversational/facebook/blenderbot-400M-distill"})


def test_capabilities_by_mode():
    gen, chat = make(LOCAL), make(CHAT)
    emb = make({"model": "huggingface/BAAI/bge-small-en-v1.5"}, {"mode": "embedding"})
    assert (gen.tools, gen.vision, gen.native_completions) == (False, False, True)
    assert (chat.tools, chat.vision, chat.native_completions) == (True, True, False)
    assert HuggingFaceProvider.tools and HuggingFaceProvider.embeddings  # the README table's view
    assert gen.supports("chat", True) and gen.supports("completions", True) and not gen.supports("embeddings", False)
    assert emb.supports("embeddings", False) and not emb.supports("chat", False)


def test_keys_go_only_where_they_belong(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    assert make({"model": "huggingface/m"}).headers["Authorization"] == "Bearer hf_env_token"
    assert make({"model": "huggingface/m", "api_base": "https://x.endpoints.huggingface.cloud"}).headers[
        "Authorization"] == "Bearer hf_env_token"
    assert "Authorization" not in make(LOCAL).headers  # an env key never goes to an arbitrary host
    assert make({**LOCAL, "api_key": "hf_explicit"}).headers["Authorization"] == "Bearer hf_explicit"
    monkeypatch.setenv("HUGGINGFACE_API_KEY", "hf_first")
    monkeypatch.setenv("HF_API_BASE", "http://tgi.internal:8080")
    env_base = make({"model": "huggingface/m"})
    assert env_base.generate_url == "http://tgi.internal:8080/generate"
    assert env_base.headers["Authorization"] == "Bearer hf_first"
    assert env_base.secrets == ("hf_first",)
    extra = make({**LOCAL, "extra_headers": {"X-Tenant": "a"}})
    assert extra.headers["X-Tenant"] == "a"


def test_custom_prompt_template_keys():
    provider = make({**LOCAL, "roles": {"user": {"pre_message": "U: ", "post_message": "\n"},
                                        "assistant": {"pre_message": "A: ", "post_message": "\n"}},
                     "final_prompt_value": "A:", "use_chat_api": None})
    body = prepared(provider, "chat", {"messages": HI})
    assert orjson.loads(provider.build_request("chat", body, False).body)["inputs"] == "U: hi\nA:"
    assert "roles" not in orjson.loads(provider.build_request("chat", body, False).body)["parameters"]


# --- parameters: refused, dropped, or 400 -----------------------------------------------------------

@pytest.mark.parametrize("params, key", [
    (LOCAL, "presence_penalty"), (LOCAL, "logprobs"), (LOCAL, "logit_bias"), (CHAT, "n"), (CHAT, "suffix"),
])
def test_unsupported_params_refused_or_dropped(params, key):
    provider = make(params)
    request = {"messages": HI, key: 2 if key == "n" else True}
    with pytest.raises(errors.BadRequestError) as info:
        prepared(provider, "chat", request)
    assert info.value.param == key and info.value.code == "unsupported_parameter"
    assert key not in prepared(provider, "chat", request, drop_params=True)


def test_tools_on_generate_deployments():
    provider = make(LOCAL)
    with pytest.raises(errors.BadRequestError, match="no tool support"):
        prepared(provider, "chat", {"messages": HI, "tools": TOOLS})
    body = prepared(provider, "chat", {"messages": HI, "tools": TOOLS}, add_function_to_prompt=True)
    assert "Functions: " in orjson.loads(provider.build_request("chat", body, False).body)["inputs"]


def test_images_and_parts():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    message = [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]
    with pytest.raises(errors.BadRequestError, match="use_chat_api"):
        make(LOCAL).build_request("chat", {"messages": message}, False)
    sent = orjson.loads(make(CHAT).build_request("chat", {"messages": message}, False).body)
    assert sent["messages"][0]["content"][1] == image  # TGI takes data URLs as they are
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]
    with pytest.raises(errors.BadRequestError, match="http"):
        make(CHAT).build_request("chat", {"messages": bad}, False)
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]
    with pytest.raises(errors.BadRequestError, match="input_audio"):
        make(CHAT).build_request("chat", {"messages": audio}, False)


def test_requests_tgi_cannot_take():
    provider = make(LOCAL)
    with pytest.raises(errors.BadRequestError, match="n > 1") as info:
        provider.build_request("chat", {"messages": HI, "n": 3}, True)
    assert info.value.param == "n"
    with pytest.raises(errors.BadRequestError, match="one prompt string"):
        provider.build_request("completions", {"prompt": ["a", "b"]}, False)


def test_completion_stream_echo_and_options():
    provider = make(LOCAL)
    body = {"prompt": "Once", "echo": True, "stream": True, "wait_for_model": True}
    sent = orjson.loads(provider.build_request("completions", body, True).body)
    assert sent["parameters"]["return_full_text"] is False and sent["options"] == {"wait_for_model": True}
    events = [{"index": 1, "token": {"id": 1, "text": " upon", "logprob": 0, "special": False},
               "generated_text": " upon", "details": None}]
    chunks, _ = run_stream(provider, "completions", body, events)
    assert collect(chunks, "completions")[0] == "Once upon"


def test_stream_after_done_is_none():
    provider = make(CHAT)
    state = provider.new_stream_state("chat", {"messages": HI})
    assert provider.parse_stream_event("chat", b"[DONE]", state) == []
    assert provider.parse_stream_event("chat", b"[DONE]", state) is None


def test_seed_zero_and_frequency_penalty_zero_are_sent():
    provider = make(LOCAL)
    body = {"messages": HI, "seed": 0, "frequency_penalty": 0.0}
    sent = orjson.loads(provider.build_request("chat", body, False).body)
    assert sent["parameters"]["seed"] == 0 and sent["parameters"]["frequency_penalty"] == 0.0
    sent = orjson.loads(make(CHAT).build_request("chat", {"messages": HI, "seed": 0}, False).body)
    assert sent["seed"] == 0 and "stop" not in sent and "max_tokens" not in sent


def test_messages_api_stop_text_is_removed():
    """TGI's Messages API keeps the stop sequence in the text, as /generate does."""
    provider = make(CHAT)
    body = {"messages": HI, "stop": ["END"]}
    answer = provider.parse_response("chat", {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "done. END"}, "finish_reason": "stop_sequence"}]}, body)
    assert answer["choices"][0]["message"]["content"] == "done. "
    assert answer["choices"][0]["finish_reason"] == "stop"
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": t}, "finish_reason": f}]}
              for t, f in (("done. E", None), ("N", None), ("D", "length"))]
    chunks, ended = run_stream(provider, "chat", body, events + ["[DONE]"])
    assert ended and collect(chunks, "chat")[:2] == ("done. ", "stop")
