"""Gemini / PaLM translation halves (pure), table-tested against fixtures from Google's documented examples."""

import json
from pathlib import Path

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.gemini import GeminiProvider
from gateway.providers.gemini import PalmProvider
from gateway.providers.gemini import finish_reason
from gateway.routing.router import Router
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig
from gateway.config.settings import from_dict
from gateway.wire.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
KEY = "AIzaSyUNIT-test-key-0123456789abcdef"
BASE = "https://generativelanguage.googleapis.com/v1beta/models"
CHAT_FIXTURES = ["chat_text", "chat_tools", "chat_tool_result", "chat_image", "chat_blocked"]


@pytest.fixture(autouse=True)
def _no_google_env(monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_BASE", "PALM_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def load(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def make(model="gemini/gemini-2.0-flash", index=0, **params):
    """The provider for one deployment, built through the registry as the router does."""
    params.setdefault("api_key", KEY)
    params = {k: v for k, v in params.items() if v is not None}
    return providers.build(DeploymentConfig(model_name="g", params={"model": model, **params}, model_info={},
                                            index=index))


def sent(provider, body, endpoint="chat", stream=False):
    """(request, decoded JSON body) as the common HTTP flow builds it."""
    req = provider.build_request(endpoint, provider.prepare_body(endpoint, body), stream)
    return req, orjson.loads(req.body)


def without_ids(answer):
    """An answer with its generated ids and timestamps removed, for comparison."""
    answer = json.loads(json.dumps(answer))
    answer.pop("id", None)
    answer.pop("created", None)
    for choice in answer.get("choices", []):
        for call in choice["message"].get("tool_calls") or []:
            assert call.pop("id").startswith("call_")
    return answer


def subset(small, big):
    """Whether every key of `small` is in `big` with the same value (recursively for dicts)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(subset(a, b) for a, b in zip(small, big))
    return small == big


def stream_chunks(provider, body, sse_text):
    """Feed SSE bytes through the real decoder and the provider's stream translator."""
    state = provider.new_stream_state("chat", body)
    decoder = SSEDecoder()
    chunks = []
    raw = sse_text.encode()
    events = []
    for i in range(0, len(raw), 7):  # split mid-event and mid-CRLF, as networks do
        events += decoder.feed(raw[i:i + 7])
    events += decoder.close()
    for event in events:
        out = provider.parse_stream_event("chat", event.data, state)
        assert out is not None
        chunks += out
    return chunks


# --- model strings, URLs, keys --------------------------------------------------------------------

@pytest.mark.parametrize("model, cls, upstream", [
    ("gemini/gemini-2.0-flash", GeminiProvider, "gemini-2.0-flash"),
    ("gemini/gemini-1.5-pro-latest", GeminiProvider, "gemini-1.5-pro-latest"),
    ("gemini/text-embedding-004", GeminiProvider, "text-embedding-004"),
    ("palm/chat-bison", PalmProvider, "chat-bison"),
    ("palm/text-bison-001", PalmProvider, "text-bison-001"),
])
def test_model_strings(model, cls, upstream):
    provider = make(model)
    assert type(provider) is cls and provider.model == upstream


def test_bare_gemini_names_are_not_claimed():
    # LiteLLM resolves bare `gemini-pro` to Vertex AI, so this API key provider does not claim it.
    assert providers.split_model("gemini-1.5-pro")[0] != "gemini"


@pytest.mark.parametrize("api_base, model, stream, url", [
    (None, "gemini-2.0-flash", False, f"{BASE}/gemini-2.0-flash:generateContent"),
    (None, "gemini-2.0-flash", True, f"{BASE}/gemini-2.0-flash:streamGenerateContent?alt=sse"),
    (None, "models/gemini-pro", False, f"{BASE}/gemini-pro:generateContent"),
    (None, "tunedModels/my-tune-1", False,
     "https://generativelanguage.googleapis.com/v1beta/tunedModels/my-tune-1:generateContent"),
    ("http://127.0.0.1:9/", "gemini-2.0-flash", False,
     "http://127.0.0.1:9/v1beta/models/gemini-2.0-flash:generateContent"),
    ("https://gateway.ai.cloudflare.com/v1/acct/gw/google-ai-studio/v1beta", "gemini-2.0-flash", True,
     "https://gateway.ai.cloudflare.com/v1/acct/gw/google-ai-studio/v1beta/models/gemini-2.0-flash"
     ":streamGenerateContent?alt=sse"),
])
def test_urls(api_base, model, stream, url):
    req, _ = sent(make(f"gemini/{model}", api_base=api_base), {"messages": [{"role": "user", "content": "x"}]},
                  stream=stream)
    assert req.url == url
    assert KEY not in req.url  # the key travels in a header only


def test_embeddings_url_and_key_header():
    req, _ = sent(make("gemini/text-embedding-004"), {"input": "x"}, endpoint="embeddings")
    assert req.url == f"{BASE}/text-embedding-004:batchEmbedContents"
    assert req.headers["x-goog-api-key"] == KEY
    assert "Authorization" not in req.headers


def test_missing_key_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        make(index=3, api_key=None)
    assert str(info.value).startswith("model_list[3].litellm_params.api_key")


@pytest.mark.parametrize("env", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_key_from_env(monkeypatch, env):
    monkeypatch.setenv(env, "AIzaSyFROM-ENV")
    req, _ = sent(make(api_key=None), {"messages": [{"role": "user", "content": "x"}]})
    assert req.headers["x-goog-api-key"] == "AIzaSyFROM-ENV"


def test_env_key_never_goes_to_a_custom_api_base(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyFROM-ENV")
    req, _ = sent(make(api_key=None, api_base="http://proxy.example"), {"messages": [{"role": "user", "content": "x"}]})
    assert "x-goog-api-key" not in req.headers


def test_env_base_gets_the_env_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyFROM-ENV")
    monkeypatch.setenv("GEMINI_API_BASE", "http://corp-proxy.example")
    req, _ = sent(make(api_key=None), {"messages": [{"role": "user", "content": "x"}]})
    assert req.url.startswith("http://corp-proxy.example/v1beta/models/")
    assert req.headers["x-goog-api-key"] == "AIzaSyFROM-ENV"


# --- chat: fixtures -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CHAT_FIXTURES)
def test_chat_request_fixture(name):
    case = load(name)
    _, body = sent(make(f"gemini/{case['openai_request']['model']}"), case["openai_request"])
    assert body == case["gemini_request"]


@pytest.mark.parametrize("name", CHAT_FIXTURES)
def test_chat_response_fixture(name):
    case = load(name)
    provider = make(f"gemini/{case['openai_request']['model']}")
    answer = provider.parse_response("chat", case["gemini_response"], case["openai_request"])
    assert answer["id"].startswith("chatcmpl-") and isinstance(answer["created"], int)
    assert answer["object"] == "chat.completion" and answer["model"] == provider.model
    got = without_ids(answer)
    assert subset(case["openai_response"], got), json.dumps(got, indent=1)


def test_thought_signature_round_trips_through_the_tool_call_id():
    case = load("chat_tools")
    provider = make("gemini/gemini-2.5-flash")
    calls = provider.parse_response("chat", case["gemini_response"], {})["choices"][0]["message"]["tool_calls"]
    assert "__thought__" not in calls[0]["id"]
    assert calls[1]["id"].endswith("__thought__CiQBVKhc7vB1c2lnbmF0dXJl")
    history = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": calls},
                            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "a"},
                            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "b"}]}
    _, body = sent(provider, history)
    parts = body["contents"][1]["parts"]
    assert "thoughtSignature" not in parts[0] and parts[1]["thoughtSignature"] == "CiQBVKhc7vB1c2lnbmF0dXJl"
    assert [p["functionResponse"]["response"] for p in body["contents"][2]["parts"]] == [
        {"content": "a"}, {"content": "b"}]


@pytest.mark.parametrize("raw, has_tools, expected", [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("MAX_TOKENS", True, "length"), ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
    ("SPII", False, "content_filter"), ("OTHER", False, "stop"), ("MALFORMED_FUNCTION_CALL", False, "stop"),
    (None, False, None),
])
def test_finish_reasons(raw, has_tools, expected):
    assert finish_reason(raw, has_tools) == expected


# --- chat: translation details --------------------------------------------------------------------

def test_http_image_url_is_refused_never_fetched():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}]}
    with pytest.raises(errors.BadRequestError) as info:
        sent(make(), body)
    assert "never fetches" in info.value.message and info.value.status == 400


def test_files_api_uri_audio_and_file_parts():
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri, "format": "image/webp"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}]}
    _, out = sent(make(), body)
    assert out["contents"][0]["parts"] == [
        {"fileData": {"fileUri": uri, "mimeType": "image/webp"}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]


@pytest.mark.parametrize("messages, fragment", [
    ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "matches no earlier assistant tool call"),
    ([{"role": "critic", "content": "x"}], "Unsupported message role"),
    ([{"role": "user", "content": [{"type": "video", "video": {}}]}], "type 'video'"),
    ([{"role": "user", "content": ""}], "at least one non-empty message"),
])
def test_bad_messages(messages, fragment):
    with pytest.raises(errors.BadRequestError) as info:
        sent(make(), {"messages": messages})
    assert fragment in info.value.message


def test_lone_system_prompt_becomes_the_user_turn():
    _, body = sent(make(), {"messages": [{"role": "system", "content": "Tell a joke."}]})
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Tell a joke."}]}]}


def test_legacy_function_messages():
    body = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "calling",
                          "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
                         {"role": "function", "name": "f", "content": "42"}]}
    _, out = sent(make(), body)
    assert out["contents"][1] == {"role": "model", "parts": [{"text": "calling"},
                                                             {"functionCall": {"name": "f", "args": {"a": 1}}}]}
    assert out["contents"][2]["parts"] == [{"functionResponse": {"name": "f", "response": {"content": "42"}}}]


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice(choice, config):
    tools = [{"type": "function", "function": {"name": "f"}}]
    _, out = sent(make(), {"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_native_google_tools_pass_through():
    tools = [{"googleSearch": {}}, {"type": "function", "function": {"name": "f"}}]
    _, out = sent(make(), {"messages": [{"role": "user", "content": "x"}], "tools": tools})
    assert out["tools"] == [{"functionDeclarations": [{"name": "f"}]}, {"googleSearch": {}}]


@pytest.mark.parametrize("effort, config", [
    ("low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("high", {"thinkingBudget": 4096, "includeThoughts": True}),
    ("none", {"thinkingBudget": 0, "includeThoughts": False}),
])
def test_reasoning_effort(effort, config):
    _, out = sent(make(), {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort})
    assert out["generationConfig"]["thinkingConfig"] == config


def test_deployment_defaults_and_safety_settings():
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    provider = make(temperature=0.1, safety_settings=safety)
    _, out = sent(provider, {"messages": [{"role": "user", "content": "x"}], "stop": "END"})
    assert out["generationConfig"] == {"temperature": 0.1, "stopSequences": ["END"]}
    assert out["safetySettings"] == safety


# --- params: refused or dropped --------------------------------------------------------------------

@pytest.mark.parametrize("param, value", [("logprobs", True), ("logit_bias", {"1": 2}),
                                          ("web_search_options", {}), ("modalities", ["audio"])])
def test_unsupported_params_refused_or_dropped(param, value):
    provider = make()
    body = {"messages": [{"role": "user", "content": "x"}], param: value}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param and "gemini" in info.value.message
    assert param not in adapt.check_params(provider, "chat", body, drop_params=True)


def test_supported_params_pass():
    body = {"messages": [], "temperature": 0, "top_p": 1, "n": 2, "stop": "x", "max_tokens": 5, "seed": 1,
            "max_completion_tokens": 5, "presence_penalty": 0.1, "frequency_penalty": 0.1, "user": "u",
            "response_format": {"type": "json_object"}, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True, "reasoning_effort": "low"}
    assert adapt.check_params(make(), "chat", body, drop_params=False) == body


# --- streams ---------------------------------------------------------------------------------------

def test_stream_text_fixture():
    case = load("stream_text")
    chunks = stream_chunks(make(), case["openai_request"], case["sse"])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == case["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == case["finish_reason"] and not any(finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == case["usage"]


def test_stream_without_include_usage_has_no_usage_chunk():
    case = load("stream_text")
    body = {**case["openai_request"], "stream_options": None}
    chunks = stream_chunks(make(), body, case["sse"])
    assert all(c["choices"] for c in chunks)


def test_stream_tools_fixture():
    case = load("stream_tools")
    chunks = stream_chunks(make(), case["openai_request"], case["sse"])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == case["content"]
    calls = [t for c in chunks for t in c["choices"][0]["delta"].get("tool_calls") or []]
    assert [(t["index"], t["function"]["name"], json.loads(t["function"]["arguments"])) for t in calls] == [
        (e["index"], e["name"], e["arguments"]) for e in case["tool_calls"]]
    assert all(t["id"].startswith("call_") and t["type"] == "function" for t in calls)
    assert len({t["id"] for t in calls}) == 2
    assert chunks[-1]["choices"][0]["finish_reason"] == case["finish_reason"]


def test_stream_tool_call_first_delta_has_null_content():
    sse = ('data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},'
           '"finishReason": "STOP"}]}\r\n\r\n')
    chunks = stream_chunks(make(), {"messages": []}, sse)
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["role"] == "assistant" and delta["content"] is None and delta["tool_calls"][0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_two_candidates_usage_after_both_finish():
    events = [
        {"candidates": [{"content": {"parts": [{"text": "A"}]}}, {"content": {"parts": [{"text": "B"}]}, "index": 1}]},
        {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2, "totalTokenCount": 4}},
        {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}],
         "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 4, "totalTokenCount": 6}},
    ]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    chunks = stream_chunks(make(), {"messages": [], "n": 2, "stream_options": {"include_usage": True}}, sse)
    by_index = {0: "", 1: ""}
    for c in chunks[:-1]:
        by_index[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content") or ""
    assert by_index == {0: "Aa", 1: "Bb"}
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]] == [
        "stop", "length"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


def test_stream_usage_even_when_fewer_candidates_than_n_come_back():
    sse = ('data: {"candidates": [{"content": {"parts": [{"text": "only one"}]}, "finishReason": "STOP"}], '
           '"usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2}}\n\n')
    chunks = stream_chunks(make(), {"messages": [], "n": 3, "stream_options": {"include_usage": True}}, sse)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3


def test_stream_blocked_prompt():
    sse = ('data: {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, '
           '"usageMetadata": {"promptTokenCount": 5}}\n\n')
    chunks = stream_chunks(make(), {"messages": [], "stream_options": {"include_usage": True}}, sse)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "content_filter"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 5


def test_stream_error_event_raises_the_mapped_error():
    provider = make()
    state = provider.new_stream_state("chat", {})
    event = b'{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}'
    with pytest.raises(errors.UpstreamError) as info:
        provider.parse_stream_event("chat", event, state)
    assert info.value.status == 503 and "overloaded" in info.value.message


# --- embeddings ------------------------------------------------------------------------------------

def test_embeddings_fixture():
    case = load("embeddings")
    provider = make("gemini/text-embedding-004")
    _, body = sent(provider, case["openai_request"], endpoint="embeddings")
    assert body == case["gemini_request"]
    assert provider.parse_response("embeddings", case["gemini_response"], case["openai_request"]) == \
        case["openai_response"]


def test_embeddings_task_type_and_token_inputs():
    provider = make("gemini/text-embedding-004")
    _, body = sent(provider, {"input": "q", "task_type": "retrieval_query"}, endpoint="embeddings")
    assert body["requests"][0]["taskType"] == "RETRIEVAL_QUERY"
    with pytest.raises(errors.BadRequestError):
        sent(provider, {"input": [1, 2, 3]}, endpoint="embeddings")


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("errors")["cases"], ids=lambda c: c["name"])
def test_error_mapping(case):
    raw = case["raw"].encode() if "raw" in case else json.dumps(case["body"]).encode()
    err = make().map_error(case["status"], raw, case.get("headers") or {})
    expect = case["expect"]
    assert isinstance(err, errors.GatewayError)
    assert err.status == expect["status"]
    assert err.upstream_status == expect["status"]  # what the router's retry/fallback rules see
    assert expect["message"] in err.message and "gemini" in err.message
    if "code" in expect:
        assert err.code == expect["code"]
    if "type" in expect:
        assert err.type == expect["type"]
    if "retry_after" in expect:
        assert err.headers["Retry-After"] == expect["retry_after"]


def test_error_messages_are_scrubbed_of_the_key():
    raw = json.dumps({"error": {"code": 400, "message": f"bad key {KEY} given", "status": "INVALID_ARGUMENT"}})
    err = make().map_error(400, raw.encode(), {})
    assert KEY not in err.message and "[redacted]" in err.message


# --- PaLM: retired -----------------------------------------------------------------------------------

def test_palm_answers_a_clear_404_for_every_call():
    settings = from_dict({"model_list": [{"model_name": "bison", "litellm_params": {"model": "palm/chat-bison"}}]},
                         environ=False)
    router = Router(settings, transport=None)
    tools = [{"type": "function", "function": {"name": "f"}}]
    for endpoint, body, stream in [("chat", {"model": "bison", "messages": [{"role": "user", "content": "hi"}]}, False),
                                   ("chat", {"model": "bison", "messages": [], "tools": tools}, True),
                                   ("completions", {"model": "bison", "prompt": "hi"}, False),
                                   ("embeddings", {"model": "bison", "input": "hi"}, False)]:
        with pytest.raises(errors.NotFoundError) as info:
            router.call(endpoint, body, stream)
        assert info.value.status == info.value.upstream_status == 404  # 404 upstream: fallbacks apply
        assert info.value.message.startswith("PaLM model chat-bison is retired by Google; use")
        assert "gemini/" in info.value.message
