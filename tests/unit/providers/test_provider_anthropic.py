"""Anthropic's pure halves, table-tested from fixtures shaped like Anthropic's documented examples."""

import json
from pathlib import Path

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.anthropic import AnthropicProvider
from gateway.config.settings import DeploymentConfig
from gateway.wire.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
KEY = "sk-ant-api03-unit-test-key-000000"


def load(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch):
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def make(model="anthropic/claude-3-5-sonnet-20240620", index=0, **params):
    """The provider for one deployment, built through the registry as the router does."""
    params.setdefault("api_key", KEY)
    return providers.build(DeploymentConfig(model_name="claude", params={"model": model, **params},
                                            model_info={}, index=index))


def sse_events(raw):
    """The `data` of each event of an SSE body, through the gateway's own decoder."""
    decoder = SSEDecoder()
    events = decoder.feed(raw.encode())
    return [e.data for e in events + decoder.close()]


def run_stream(provider, raw, include_usage=True):
    body = {"stream_options": {"include_usage": include_usage}}
    state = provider.new_stream_state("chat", body)
    chunks = []
    for data in sse_events(raw):
        out = provider.parse_stream_event("chat", data, state)
        if out is None:
            break
        chunks.extend(out)
    return chunks


# --- registry and settings ---------------------------------------------------------------------

@pytest.mark.parametrize("model, upstream", [
    ("anthropic/claude-3-opus-20240229", "claude-3-opus-20240229"),
    ("anthropic/claude-3-5-sonnet-latest", "claude-3-5-sonnet-latest"),
    ("claude-instant-1", "claude-instant-1"),
    ("claude-2", "claude-2"),
    ("claude-2.1", "claude-2.1"),
    ("claude-3-haiku-20240307", "claude-3-haiku-20240307"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4-20250514"),
])
def test_model_strings(model, upstream):
    provider = make(model)
    assert type(provider) is AnthropicProvider
    assert provider.model == upstream


def test_defaults_headers_and_url():
    provider = make()
    req = provider.build_request("chat", {"messages": [{"role": "user", "content": "hi"}]}, False)
    assert req.method == "POST"
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers


@pytest.mark.parametrize("api_base, url", [
    ("http://127.0.0.1:9/", "http://127.0.0.1:9/v1/messages"),
    ("http://proxy.local/anthropic/v1", "http://proxy.local/anthropic/v1/messages"),
    ("http://proxy.local/v1/messages", "http://proxy.local/v1/messages"),
])
def test_api_base_forms(api_base, url):
    assert make(api_base=api_base).url == url


def test_env_key_and_base(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-1111")
    monkeypatch.setenv("ANTHROPIC_API_BASE", "http://corp-proxy:8080")
    provider = make(api_key=None)
    assert provider.url == "http://corp-proxy:8080/v1/messages"
    assert provider.headers["x-api-key"] == "sk-ant-from-env-1111"


def test_env_base_url_alias_and_auth_token(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://other:1")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "tok-abc-123")
    provider = make(api_key=None)
    assert provider.url == "http://other:1/v1/messages"
    assert provider.headers["authorization"] == "Bearer tok-abc-123"
    assert "x-api-key" not in provider.headers


def test_env_key_never_goes_to_a_deployment_api_base(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-1111")
    provider = make(api_key=None, api_base="http://somewhere-else:1")
    assert "x-api-key" not in provider.headers


def test_missing_key_is_a_config_error_naming_the_entry():
    from gateway.config.settings import ConfigError
    with pytest.raises(ConfigError, match=r"model_list\[3\]\.litellm_params\.api_key"):
        make(api_key=None, index=3)


def test_extra_headers_and_scrubbed_label():
    provider = make(headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    assert provider.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert KEY not in provider.label
    assert provider.scrub(f"bad key {KEY}") == "bad key [redacted]"


# --- requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("requests.json")["cases"], ids=lambda c: c["name"])
def test_request_translation(case):
    provider = make("anthropic/" + case["openai"]["model"])
    body = provider.prepare_body("chat", case["openai"])
    req = provider.build_request("chat", body, case["stream"])
    assert orjson.loads(req.body) == case["anthropic"]


def test_deployment_defaults_apply():
    provider = make(max_tokens=77, temperature=0.5)
    body = provider.prepare_body("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1})
    sent = orjson.loads(provider.build_request("chat", body, False).body)
    assert (sent["max_tokens"], sent["temperature"]) == (77, 0.1)


def test_anthropic_native_params_pass_through():
    provider = make()
    thinking = {"type": "enabled", "budget_tokens": 2048}
    body = provider.prepare_body("chat", {"messages": [{"role": "user", "content": "hi"}], "top_k": 3,
                                          "thinking": thinking, "frequency_of_nonsense": 1})
    sent = orjson.loads(provider.build_request("chat", body, False).body)
    assert (sent["top_k"], sent["thinking"]) == (3, thinking)
    assert "frequency_of_nonsense" not in sent  # unknown keys are not forwarded to a typed API


@pytest.mark.parametrize("message, fragment", [
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}, "http(s) URL"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]},
     "'input_audio' is not supported"),
    ({"role": "tool", "content": "x"}, "tool_call_id is required"),
    ({"role": "wizard", "content": "x"}, "role 'wizard'"),
    ({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                          "function": {"name": "f", "arguments": "not json"}}]}, "JSON object"),
])
def test_bad_messages_are_400(message, fragment):
    provider = make()
    with pytest.raises(errors.BadRequestError) as info:
        provider.build_request("chat", {"messages": [{"role": "user", "content": "hi"}, message]}, False)
    assert info.value.status == 400
    assert fragment in info.value.message


@pytest.mark.parametrize("param, value", [
    ("response_format", {"type": "json_object"}),
    ("n", 2),
    ("seed", 7),
    ("logprobs", True),
    ("presence_penalty", 0.5),
])
def test_unsupported_params_refused_or_dropped(param, value):
    provider = make()
    body = {"messages": [{"role": "user", "content": "hi"}], param: value}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param
    assert param not in adapt.check_params(provider, "chat", body, drop_params=True)


def test_supported_params_pass_check():
    provider = make()
    body = {"messages": [], "temperature": 1, "top_p": 1, "stop": "x", "max_tokens": 5,
            "max_completion_tokens": 5, "user": "u", "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True, "n": 1, "stream_options": {"include_usage": True}}
    assert adapt.check_params(provider, "chat", body, drop_params=False) == body


def test_capabilities():
    provider = make()
    assert provider.supports("chat", True) and provider.supports("completions", True)
    assert not provider.supports("embeddings", False)
    assert provider.native_completions is False and provider.tools and provider.vision


# --- answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("responses.json")["cases"], ids=lambda c: c["name"])
def test_response_translation(case):
    out = make().parse_response("chat", case["anthropic"], {})
    want = case["expected"]
    assert out["object"] == "chat.completion"
    assert out["id"] == want.get("id", case["anthropic"]["id"])
    assert out["model"] == case["anthropic"]["model"]
    [choice] = out["choices"]
    assert choice["message"] == want["message"]
    assert choice["finish_reason"] == want["finish_reason"]
    assert out["usage"] == want["usage"]


def test_completions_answered_through_chat():
    answer = make().parse_response("chat", load("responses.json")["cases"][0]["anthropic"], {})
    text = adapt.chat_to_completion(answer)
    assert text["object"] == "text_completion"
    assert text["choices"][0]["text"] == "Hi! My name is Claude."


# --- streams -----------------------------------------------------------------------------------

def test_text_stream():
    fixture = load("stream_text.json")
    chunks = run_stream(make(), fixture["sse"])
    want = fixture["expected"]
    content_chunks = [c for c in chunks if c["choices"]]
    assert content_chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks) == want["content"]
    assert [c["choices"][0]["finish_reason"] for c in content_chunks][-1] == want["finish_reason"]
    assert all(c["id"] == want["id"] and c["model"] == want["model"] for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == want["usage"]


def test_text_stream_without_include_usage_has_no_usage_chunk():
    chunks = run_stream(make(), load("stream_text.json")["sse"], include_usage=False)
    assert all(c["choices"] for c in chunks)
    assert "usage" not in chunks[-1]


def test_tool_use_stream():
    fixture = load("stream_tool_use.json")
    chunks = run_stream(make(), fixture["sse"])
    want = fixture["expected"]
    text, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                if "id" in call:
                    assert call["type"] == "function" and call["function"]["arguments"] == ""
                    slot["id"], slot["name"] = call["id"], call["function"]["name"]
                slot["arguments"] += call["function"].get("arguments") or ""
            finish = choice["finish_reason"] or finish
    assert text == want["content"]
    assert [{"index": i, **calls[i]} for i in sorted(calls)] == want["tool_calls"]
    assert finish == want["finish_reason"]
    assert chunks[-1]["usage"] == want["usage"]


def test_stream_error_event_raises_upstream_error():
    provider = make()
    state = provider.new_stream_state("chat", {})
    seen = []
    with pytest.raises(errors.UpstreamError) as info:
        for data in sse_events(load("errors.json")["stream_error_sse"]):
            seen.extend(provider.parse_stream_event("chat", data, state))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in seen) == "Hel"
    assert "Overloaded" in info.value.message and info.value.code == "overloaded_error"
    assert info.value.upstream_status == 529
    assert info.value.body()["error"]["message"].startswith("Upstream error from anthropic: Overloaded")


def test_thinking_stream_becomes_reasoning_content():
    provider = make()
    state = provider.new_stream_state("chat", {})
    start = b'{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}'
    delta = b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}'
    assert provider.parse_stream_event("chat", start, state) == []
    [chunk] = provider.parse_stream_event("chat", delta, state)
    assert chunk["choices"][0]["delta"] == {"reasoning_content": "Let me see"}


def test_unknown_stream_events_are_ignored():
    provider = make()
    state = provider.new_stream_state("chat", {})
    assert provider.parse_stream_event("chat", b'{"type": "ping"}', state) == []
    assert provider.parse_stream_event("chat", b'{"type": "some_future_event"}', state) == []
    delta = b'{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}'
    assert provider.parse_stream_event("chat", delta, state) == []


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("errors.json")["http"], ids=lambda c: c["name"])
def test_error_mapping(case):
    body = case["body"]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    err = make().map_error(case["status"], raw, case["headers"])
    want = case["expected"]
    assert isinstance(err, errors.GatewayError)
    assert err.status == want["status"]
    envelope = err.body()["error"]
    assert envelope["type"] == want["type"]
    assert envelope["code"] == want["code"]
    assert want["message"] in envelope["message"]
    assert envelope["message"].startswith("Upstream error from anthropic: ")
    assert err.upstream_status == case["status"]
    if "retry_after" in want:
        assert err.headers == {"Retry-After": want["retry_after"]}
    else:
        assert err.headers == {}
    if "request_id" in want:
        assert err.upstream_request_id == want["request_id"]


def test_context_length_is_its_own_class():
    raw = json.dumps(load("errors.json")["http"][1]["body"]).encode()
    assert isinstance(make().map_error(400, raw, {}), errors.ContextWindowExceededError)


def test_error_messages_never_carry_the_key():
    raw = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                 "message": f"invalid x-api-key {KEY}"}}).encode()
    err = make().map_error(401, raw, {})
    assert KEY not in err.message and "[redacted]" in err.message


# ---- Anthropic's Messages API passed through (/v1/messages) ---------------------------------------

def test_a_messages_body_goes_upstream_as_sent_with_the_clients_anthropic_headers():
    provider = make(temperature=0.2)
    body = {"model": "claude", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u", "other": 1},
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "anthropic_headers": {"anthropic-beta": "interleaved-thinking-2025-05-14"}, "fallbacks": ["x"]}
    prepared = provider.prepare_body("messages", body)
    req = provider.build_request("messages", prepared, False)
    assert req.url.endswith("/v1/messages")
    assert orjson.loads(req.body) == {
        "model": "claude-3-5-sonnet-20240620", "max_tokens": 9, "temperature": 0.2, "messages": body["messages"],
        "thinking": body["thinking"], "system": body["system"], "metadata": {"user_id": "u"}}
    assert req.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14" and req.headers["x-api-key"] == KEY
    assert "anthropic-beta" not in provider.headers  # the deployment's own headers are left as they were


def test_count_tokens_sends_only_what_count_tokens_takes():
    provider = make()
    body = {"model": "claude", "max_tokens": 9, "stream": True, "temperature": 1, "system": "s",
            "messages": [{"role": "user", "content": "hi"}], "tools": []}
    req = provider.build_request("count_tokens", provider.prepare_body("count_tokens", body), False)
    assert req.url.endswith("/v1/messages/count_tokens")
    assert orjson.loads(req.body) == {"model": "claude-3-5-sonnet-20240620", "system": "s",
                                      "messages": body["messages"], "tools": []}


def test_messages_events_pass_through_and_an_error_event_raises():
    provider = make()
    state = provider.new_stream_state("messages", {})
    start = {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}}
    signature = {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}
    assert provider.parse_stream_event("messages", orjson.dumps(start), state) == [start]
    assert provider.parse_stream_event("messages", orjson.dumps(signature), state) == [signature]
    assert not provider.stream_ended(state)
    provider.parse_stream_event("messages", b'{"type": "message_stop"}', state)
    assert provider.stream_ended(state)
    with pytest.raises(errors.UpstreamError) as caught:
        provider.parse_stream_event("messages", b'{"type": "error", "error": {"type": "overloaded_error", '
                                                b'"message": "Overloaded"}}', state)
    assert caught.value.code == "overloaded_error"
    message = {"type": "message", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}
    assert provider.parse_response("messages", message, {}) is message
