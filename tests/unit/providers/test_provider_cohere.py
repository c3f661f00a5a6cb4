"""Cohere translation halves (pure, no network), table-tested from fixtures shaped like Cohere's docs."""

import json
from pathlib import Path

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.cohere import CohereProvider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "cohere"
KEY = "co-unit-test-key-5f1e2d3c4b5a"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def _no_cohere_env(monkeypatch):
    for name in ("COHERE_API_KEY", "CO_API_KEY", "COHERE_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def make(model="cohere/command-r-plus", index=0, **params):
    """The provider for one deployment, built the way the router builds it."""
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
        out = provider.parse_stream_event("chat", json.dumps(event).encode(), state)
        if out is None:
            break
        chunks.extend(out)
    return chunks


# --- names, keys, base URLs -------------------------------------------------------------------

@pytest.mark.parametrize("model, upstream", [
    ("cohere/command-r-plus", "command-r-plus"),
    ("cohere_chat/command-r", "command-r"),
    ("command", "command"),
    ("command-nightly", "command-nightly"),
    ("command-light", "command-light"),
    ("command-r", "command-r"),
    ("command-r7b-12-2024", "command-r7b-12-2024"),
    ("command-a-03-2025", "command-a-03-2025"),
    ("embed-english-v3.0", "embed-english-v3.0"),
    ("embed-multilingual-light-v3.0", "embed-multilingual-light-v3.0"),
    ("embed-v4.0", "embed-v4.0"),
])
def test_model_strings_resolve_to_cohere(model, upstream):
    provider = make(model)
    assert isinstance(provider, CohereProvider)
    assert provider.model == upstream


@pytest.mark.parametrize("model", ["commander-7b", "embed-foo"])
def test_lookalike_names_are_not_cohere(model):
    assert providers.split_model(model)[0] != "cohere"


def test_default_base_and_bearer_key():
    req, body = request_of(make(), "chat", HELLO)
    assert req.url == "https://api.cohere.com/v2/chat"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert body == {"model": "command-r-plus", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.mark.parametrize("env", ["COHERE_API_KEY", "CO_API_KEY"])
def test_key_from_env(monkeypatch, env):
    monkeypatch.setenv(env, "co-env-key-123456")
    provider = make(api_key=None)
    assert provider.headers["Authorization"] == "Bearer co-env-key-123456"


def test_env_key_goes_to_env_base_but_not_to_another_api_base(monkeypatch):
    monkeypatch.setenv("COHERE_API_KEY", "co-env-key-123456")
    monkeypatch.setenv("COHERE_API_BASE", "http://cohere-proxy.internal:8080")
    assert make(api_key=None).urls["chat"] == "http://cohere-proxy.internal:8080/v2/chat"
    with pytest.raises(ConfigError, match=r"model_list\[3\]\.litellm_params\.api_key"):
        make(api_key=None, api_base="http://elsewhere.example", index=3)


def test_missing_key_names_the_config_entry():
    with pytest.raises(ConfigError, match=r"model_list\[2\]\.litellm_params\.api_key.*COHERE_API_KEY"):
        make(api_key=None, index=2)


@pytest.mark.parametrize("api_base", ["https://api.cohere.ai/v1/chat", "https://api.cohere.ai/v2/chat/",
                                      "https://api.cohere.ai/v1/generate", "https://api.cohere.ai/"])
def test_api_base_written_as_a_full_endpoint_keeps_the_root(api_base):
    provider = make(api_base=api_base)
    assert provider.urls == {"chat": "https://api.cohere.ai/v2/chat", "embeddings": "https://api.cohere.ai/v2/embed",
                             "rerank": "https://api.cohere.ai/v2/rerank"}


def test_stream_request_asks_for_sse():
    req, body = request_of(make(), "chat", {**HELLO, "stream": True}, stream=True)
    assert body["stream"] is True
    assert req.headers["Accept"] == "text/event-stream"


# --- chat request ---------------------------------------------------------------------------

def test_chat_request_from_fixture():
    case = fixture("chat_request.json")
    _req, body = request_of(make("cohere/command-a-vision-07-2025"), "chat", case["openai"])
    assert body == case["cohere"]


def test_deployment_defaults_and_native_params_pass_through():
    provider = make(temperature=0.1, k=40, safety_mode="STRICT")
    _req, body = request_of(provider, "chat", {**HELLO, "documents": [{"data": {"text": "doc"}}]})
    assert (body["temperature"], body["k"], body["safety_mode"]) == (0.1, 40, "STRICT")
    assert body["documents"] == [{"data": {"text": "doc"}}]


@pytest.mark.parametrize("choice, sent_choice, names", [
    ("auto", None, ["a", "b"]),
    ("none", "NONE", ["a", "b"]),
    ("required", "REQUIRED", ["a", "b"]),
    ({"type": "function", "function": {"name": "b"}}, "REQUIRED", ["b"]),
])
def test_tool_choice(choice, sent_choice, names):
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    _req, body = request_of(make(), "chat", {**HELLO, "tools": tools, "tool_choice": choice})
    assert body.get("tool_choice") == sent_choice
    assert [t["function"]["name"] for t in body["tools"]] == names


def test_tool_choice_naming_an_unknown_tool_is_refused():
    tools = [{"type": "function", "function": {"name": "a"}}]
    with pytest.raises(errors.BadRequestError, match="tool_choice"):
        request_of(make(), "chat", {**HELLO, "tools": tools,
                                    "tool_choice": {"type": "function", "function": {"name": "zzz"}}})


@pytest.mark.parametrize("fmt, sent", [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
     {"type": "json_object", "json_schema": {"type": "object"}}),
    ({"type": "text"}, {"type": "text"}),
])
def test_response_format(fmt, sent):
    _req, body = request_of(make(), "chat", {**HELLO, "response_format": fmt})
    assert body["response_format"] == sent


def test_max_completion_tokens_wins_and_dict_arguments_are_serialized():
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]}]
    _req, body = request_of(make(), "chat", {"messages": messages, "max_tokens": 5, "max_completion_tokens": 9})
    assert body["max_tokens"] == 9
    assert body["messages"][1] == {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "ok"}


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "ftp://example.com/x.png"}},
    {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
])
def test_bad_parts_are_a_clear_400(part):
    with pytest.raises(errors.BadRequestError):
        request_of(make(), "chat", {"messages": [{"role": "user", "content": [part]}]})


# --- chat answers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["chat_response.json", "chat_tools_response.json"])
def test_chat_answers_from_fixtures(name):
    case = fixture(name)
    answer = make().parse_response("chat", case["cohere"], {})
    for key, value in case["openai"].items():
        assert answer[key] == value, key
    assert answer["model"] == "command-r-plus"


@pytest.mark.parametrize("reason, finish", [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
    ("ERROR_TOXIC", "content_filter"),
])
def test_finish_reasons(reason, finish):
    data = {"id": "x", "finish_reason": reason,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "a"}]}}
    assert make().parse_response("chat", data, {})["choices"][0]["finish_reason"] == finish


def test_failed_generation_is_an_upstream_error():
    data = {"id": "x", "finish_reason": "ERROR", "message": {"role": "assistant", "content": []}}
    with pytest.raises(errors.UpstreamError, match="ERROR"):
        make().parse_response("chat", data, {})


# --- streams ---------------------------------------------------------------------------------

@pytest.mark.parametrize("include_usage", [False, True])
def test_text_stream(include_usage):
    case = fixture("stream_text.json")
    chunks = run_stream(make(), case["events"], include_usage)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == case["events"][0]["id"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == case["text"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [case["finish_reason"]]
    usage_chunks = [c for c in chunks if "usage" in c]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == case["usage"]
    else:
        assert usage_chunks == []


def test_tool_stream_has_indexed_argument_deltas():
    case = fixture("stream_tools.json")
    chunks = run_stream(make(), case["events"], include_usage=True)
    calls = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for piece in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(piece["index"], {"id": None, "name": None, "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                call["name"] = piece.get("function", {}).get("name") or call["name"]
                call["arguments"] += piece.get("function", {}).get("arguments") or ""
    got = [{"index": i, "id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
           for i, c in sorted(calls.items())]
    assert got == case["tool_calls"]
    assert all("content" not in (c["choices"][0]["delta"] if c["choices"] else {}) or
               c["choices"][0]["delta"]["content"] == "" for c in chunks)  # the tool plan is not content
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["usage"] == case["usage"]


def test_stream_done_marker_and_failed_generation():
    provider = make()
    state = provider.new_stream_state("chat", {})
    assert provider.parse_stream_event("chat", b"[DONE]", state) is None
    end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "model overloaded"}}
    with pytest.raises(errors.UpstreamError, match="model overloaded"):
        provider.parse_stream_event("chat", json.dumps(end).encode(), state)


# --- embeddings ------------------------------------------------------------------------------

def test_embeddings_round_trip():
    case = fixture("embed.json")
    provider = make("cohere/embed-english-v3.0")
    req, body = request_of(provider, "embeddings", case["openai"])
    assert req.url == "https://api.cohere.com/v2/embed"
    assert body == case["cohere_request"]
    assert provider.parse_response("embeddings", case["cohere_response"], case["openai"]) == case["openai_response"]


def test_embeddings_input_type_from_request_and_token_inputs_refused():
    provider = make("cohere/embed-english-v3.0")
    _req, body = request_of(provider, "embeddings", {"input": "q", "input_type": "search_query"})
    assert body["input_type"] == "search_query" and body["texts"] == ["q"]
    with pytest.raises(errors.BadRequestError):
        request_of(provider, "embeddings", {"input": [[1, 2, 3]]})


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", fixture("errors.json"), ids=lambda c: c["name"])
def test_errors(case):
    raw = case["raw"].encode() if "raw" in case else json.dumps(case["body"]).encode()
    err = make().map_error(case["status"], raw, case.get("headers") or {})
    expect = case["expect"]
    assert type(err).__name__ == expect["class"]
    assert err.status == expect["status"]
    assert err.code == expect["code"]
    assert expect["contains"] in err.message
    assert err.upstream_status == case["status"]
    if expect.get("retry_after"):
        assert err.headers == {"Retry-After": expect["retry_after"]}


def test_error_messages_never_carry_the_key():
    raw = json.dumps({"message": f"invalid api token: {KEY}"}).encode()
    err = make().map_error(401, raw, {})
    assert KEY not in err.message and "[redacted]" in err.message


# --- unsupported parameters ------------------------------------------------------------------

@pytest.mark.parametrize("param, value", [("logit_bias", {"1": 2}), ("n", 2), ("user", "u-1"), ("logprobs", True)])
def test_unsupported_params_refused_or_dropped(param, value):
    provider = make()
    body = {**HELLO, param: value}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param
    assert param not in adapt.check_params(provider, "chat", body, drop_params=True)


def test_supported_params_pass_check():
    body = {**HELLO, "temperature": 1, "top_p": 0.5, "stop": ["x"], "seed": 1, "n": 1, "max_tokens": 3}
    assert adapt.check_params(make(), "chat", body, drop_params=False) == body
