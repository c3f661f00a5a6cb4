"""AI21 translation halves (pure, no network): Jamba chat and Jurassic-2 complete, from fixtures."""

import json
from pathlib import Path

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.ai21 import AI21Provider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "ai21"
KEY = "ai21-unit-test-key-9a8b7c6d5e"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def _no_ai21_env(monkeypatch):
    for name in ("AI21_API_KEY", "AI21_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def make(model="ai21/jamba-large", index=0, **params):
    params.setdefault("api_key", KEY)
    return providers.build(DeploymentConfig(model_name="g", params={"model": model, **params},
                                            model_info={}, index=index))


def request_of(provider, endpoint, body, stream=False):
    req = provider.build_request(endpoint, provider.prepare_body(endpoint, body), stream)
    return req, orjson.loads(req.body)


def run_stream(provider, events, include_usage=False):
    state = provider.new_stream_state("chat", {"stream_options": {"include_usage": include_usage}})
    chunks = []
    for event in events:
        data = event.encode() if isinstance(event, str) else json.dumps(event).encode()
        out = provider.parse_stream_event("chat", data, state)
        if out is None:
            break
        chunks.extend(out)
    return chunks


# --- names, keys, base URLs -------------------------------------------------------------------

@pytest.mark.parametrize("model, upstream, jurassic", [
    ("ai21/jamba-large", "jamba-large", False),
    ("ai21_chat/jamba-mini", "jamba-mini", False),
    ("jamba-1.5-large", "jamba-1.5-large", False),
    ("jamba-instruct", "jamba-instruct", False),
    ("j2-light", "j2-light", True),
    ("j2-mid", "j2-mid", True),
    ("j2-ultra", "j2-ultra", True),
    ("ai21/j2-grande-instruct", "j2-grande-instruct", True),
])
def test_model_strings(model, upstream, jurassic):
    provider = make(model)
    assert isinstance(provider, AI21Provider)
    assert (provider.model, provider.jurassic) == (upstream, jurassic)


@pytest.mark.parametrize("api_base, url", [
    (None, "https://api.ai21.com/studio/v1/chat/completions"),
    ("https://api.ai21.com/studio/v1/", "https://api.ai21.com/studio/v1/chat/completions"),
    ("https://api.ai21.com", "https://api.ai21.com/studio/v1/chat/completions"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/studio/v1/chat/completions"),
])
def test_urls_and_auth(api_base, url):
    provider = make(**({"api_base": api_base} if api_base else {}))
    req, body = request_of(provider, "chat", HELLO)
    assert req.url == url
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert body == {"model": "jamba-large", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_jurassic_url():
    req, _ = request_of(make("j2-ultra"), "completions", {"prompt": "x"})
    assert req.url == "https://api.ai21.com/studio/v1/j2-ultra/complete"


def test_key_from_env_only_for_ai21_bases(monkeypatch):
    monkeypatch.setenv("AI21_API_KEY", "ai21-env-key-1234")
    assert make(api_key=None).headers["Authorization"] == "Bearer ai21-env-key-1234"
    monkeypatch.setenv("AI21_API_BASE", "http://ai21-proxy.internal")
    assert make(api_key=None).url == "http://ai21-proxy.internal/studio/v1/chat/completions"
    with pytest.raises(ConfigError, match=r"model_list\[4\]\.litellm_params\.api_key.*AI21_API_KEY"):
        make(api_key=None, api_base="http://somewhere-else.example", index=4)


def test_missing_key():
    with pytest.raises(ConfigError, match=r"model_list\[1\]\.litellm_params\.api_key"):
        make(api_key=None, index=1)


def test_capabilities_per_model():
    jamba, j2 = make("jamba-mini"), make("j2-mid")
    assert (jamba.native_completions, jamba.streaming, jamba.tools) == (False, True, True)
    assert (j2.native_completions, j2.streaming, j2.tools) == (True, False, False)
    assert j2.supports("chat", False) and not j2.supports("chat", True)
    assert not jamba.supports("embeddings", False)


# --- Jamba chat ---------------------------------------------------------------------------------

def test_jamba_request_from_fixture():
    case = fixture("jamba_request.json")
    _req, body = request_of(make(), "chat", case["openai"])
    assert body == case["ai21"]


def test_documents_pass_through_and_stream_flag():
    _req, body = request_of(make(documents=[{"content": "manual"}]), "chat", HELLO, stream=True)
    assert body["documents"] == [{"content": "manual"}] and body["stream"] is True


def test_images_are_refused_clearly():
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}]
    with pytest.raises(errors.BadRequestError, match="text only") as info:
        request_of(make(), "chat", {"messages": [{"role": "user", "content": parts}]})
    assert info.value.param == "messages"


@pytest.mark.parametrize("name", ["jamba_response.json", "jamba_tools_response.json"])
def test_jamba_answers(name):
    case = fixture(name)
    answer = make().parse_response("chat", case["ai21"], {})
    for key, value in case["openai"].items():
        assert answer[key] == value, key


def test_tool_call_with_object_arguments_and_stop_finish():
    data = {"id": "x", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    choice = make().parse_response("chat", data, {})["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'


@pytest.mark.parametrize("include_usage", [False, True])
def test_jamba_stream(include_usage):
    case = fixture("jamba_stream.json")
    chunks = run_stream(make(), case["events"], include_usage)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == case["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] \
        == [case["finish_reason"]]
    assert all("usage" not in c for c in chunks[:-1])
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == case["usage"]
    else:
        assert "usage" not in chunks[-1]


def test_jamba_tool_stream():
    case = fixture("jamba_stream_tools.json")
    chunks = run_stream(make(), case["events"], include_usage=True)
    calls = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for piece in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(piece["index"], {"id": None, "name": None, "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                call["name"] = piece["function"].get("name") or call["name"]
                call["arguments"] += piece["function"].get("arguments") or ""
    assert [{"index": i, "id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
            for i, c in sorted(calls.items())] == case["tool_calls"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [case["finish_reason"]]


# --- Jurassic-2 ---------------------------------------------------------------------------------

def test_j2_completion_round_trip():
    case = fixture("j2_complete.json")
    provider = make("j2-ultra")
    _req, body = request_of(provider, "completions", case["openai"])
    assert body == case["j2_request"]
    answer = provider.parse_response("completions", case["j2_response"], case["openai"])
    for key, value in case["openai_response"].items():
        assert answer[key] == value, key


def test_j2_chat_goes_through_the_prompt_template():
    provider = make("j2-mid")
    _req, body = request_of(provider, "chat", {"messages": [{"role": "system", "content": "Be terse."},
                                                            {"role": "user", "content": "Hi?"}]})
    assert body == {"prompt": "system: Be terse.\nuser: Hi?\nassistant:"}
    data = fixture("j2_complete.json")["j2_response"]
    answer = provider.parse_response("chat", data, {})
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": " a box of chocolates"}
    assert answer["usage"]["total_tokens"] == 5


def test_j2_custom_prompt_template():
    provider = make("j2-light", roles={"user": {"pre_message": "Q: ", "post_message": "\n"}},
                    final_prompt_value="A:")
    _req, body = request_of(provider, "chat", HELLO)
    assert body["prompt"] == "Q: hi\nA:"


@pytest.mark.parametrize("reason, finish", [("endoftext", "stop"), ("length", "length"), ("stop", "stop")])
def test_j2_finish_reasons(reason, finish):
    data = {"id": "x", "prompt": {"tokens": []}, "completions": [{"data": {"text": "a", "tokens": [{}]},
                                                                 "finishReason": {"reason": reason}}]}
    assert make("j2-ultra").parse_response("completions", data, {})["choices"][0]["finish_reason"] == finish


def test_j2_several_prompts_refused():
    with pytest.raises(errors.BadRequestError):
        request_of(make("j2-ultra"), "completions", {"prompt": ["a", "b"]})


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", fixture("errors.json"), ids=lambda c: c["name"])
def test_errors(case):
    raw = case["raw"].encode() if "raw" in case else json.dumps(case["body"]).encode()
    err = make().map_error(case["status"], raw, case.get("headers") or {})
    expect = case["expect"]
    assert type(err).__name__ == expect["class"]
    assert (err.status, err.code) == (expect["status"], expect["code"])
    assert expect["contains"] in err.message
    if expect.get("retry_after"):
        assert err.headers == {"Retry-After": expect["retry_after"]}


def test_error_scrubs_key():
    err = make().map_error(401, json.dumps({"detail": f"bad token {KEY}"}).encode(), {})
    assert KEY not in err.message


# --- unsupported parameters ---------------------------------------------------------------------

@pytest.mark.parametrize("model, param, value", [
    ("jamba-large", "logit_bias", {"1": 1}),
    ("jamba-large", "presence_penalty", 0.5),
    ("jamba-large", "user", "u"),
    ("j2-ultra", "tool_choice", "auto"),
    ("j2-ultra", "seed", 3),
    ("j2-ultra", "response_format", {"type": "json_object"}),
])
def test_unsupported_params(model, param, value):
    provider = make(model)
    body = {**HELLO, param: value}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param
    assert param not in adapt.check_params(provider, "chat", body, drop_params=True)


def test_j2_tools_need_a_prompt_fallback():
    class Settings:
        add_function_to_prompt = False
        drop_params = False

    body = {**HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}
    with pytest.raises(errors.BadRequestError, match="no tool support"):
        adapt.prepare_tools(make("j2-ultra"), body, Settings())
    assert adapt.prepare_tools(make("jamba-large"), body, Settings())["tools"] == body["tools"]
