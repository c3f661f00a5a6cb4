"""Ollama translation halves (pure), table-tested against fixtures from Ollama's documented examples."""

import json
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.ollama import OllamaChatProvider
from gateway.providers.ollama import OllamaProvider
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def cases(name, key="cases"):
    return [pytest.param(c, id=c["id"]) for c in load(name)[key]]


@pytest.fixture(autouse=True)
def _no_ollama_env(monkeypatch):
    for name in ("OLLAMA_API_BASE", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def make(model, index=0, **params):
    return providers.build(DeploymentConfig(model_name="group", params={"model": model, **params},
                                            model_info={}, index=index))


def stream_state(provider, endpoint, include_usage):
    return provider.new_stream_state(endpoint, {"stream_options": {"include_usage": include_usage}})


def run_stream(provider, endpoint, lines, include_usage):
    state = stream_state(provider, endpoint, include_usage)
    chunks = []
    for line in lines:
        out = provider.parse_stream_event(endpoint, orjson.dumps(line), state)
        if out is None:
            break
        chunks.extend(out)
    return chunks


# --- registry and settings ---------------------------------------------------------------------

@pytest.mark.parametrize("model, cls, upstream", [
    ("ollama/llama3.2", OllamaProvider, "llama3.2"),
    ("ollama/llama3.2:1b", OllamaProvider, "llama3.2:1b"),
    ("ollama_chat/llama3.1", OllamaChatProvider, "llama3.1"),
    ("ollama_chat/hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", OllamaChatProvider,
     "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
])
def test_model_strings(model, cls, upstream):
    provider = make(model)
    assert type(provider) is cls
    assert provider.model == upstream


@pytest.mark.parametrize("params, env, url", [
    ({}, {}, "http://localhost:11434/api/chat"),
    ({}, {"OLLAMA_API_BASE": "http://gpu-box:11434/"}, "http://gpu-box:11434/api/chat"),
    ({"api_base": "http://h:1/api/chat"}, {"OLLAMA_API_BASE": "http://other:1"}, "http://h:1/api/chat"),
    ({"api_base": "http://h:1/api/generate"}, {}, "http://h:1/api/chat"),
    ({"base_url": "https://ollama.example/proxy"}, {}, "https://ollama.example/proxy/api/chat"),
])
def test_api_base(monkeypatch, params, env, url):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = make("ollama_chat/llama3", **params)
    assert provider.build_request("chat", provider.prepare_body("chat", {"messages": []}), False).url == url


def test_key_from_env_is_a_bearer_token_and_scrubbed(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "secret-ollama-token-123")
    provider = make("ollama/llama3")
    req = provider.build_request("chat", provider.prepare_body("chat", {"messages": []}), False)
    assert req.headers["Authorization"] == "Bearer secret-ollama-token-123"
    err = provider.map_error(401, b'{"error": "bad token secret-ollama-token-123"}', {})
    assert "secret-ollama-token-123" not in err.message
    assert err.status == 401


def test_no_key_no_auth_header_and_custom_headers():
    provider = make("ollama/llama3", headers={"X-Team": "a"})
    req = provider.build_request("chat", provider.prepare_body("chat", {"messages": []}), False)
    assert "Authorization" not in req.headers
    assert req.headers["X-Team"] == "a"


def test_deployment_options_and_top_level_keys():
    provider = make("ollama_chat/llama3", num_ctx=8192, top_k=20, keep_alive="10m", mirostat=1,
                    temperature=0.5)
    body = provider.prepare_body("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1})
    sent = orjson.loads(provider.build_request("chat", body, False).body)
    assert sent["options"] == {"num_ctx": 8192, "top_k": 20, "mirostat": 1, "temperature": 0.1}
    assert sent["keep_alive"] == "10m"


def test_reasoning_effort_maps_to_think():
    provider = make("ollama_chat/qwen3")
    sent = orjson.loads(provider.build_request("chat", {"messages": [], "reasoning_effort": "high"}, False).body)
    assert sent["think"] is True
    oss = make("ollama_chat/gpt-oss:20b")
    sent = orjson.loads(oss.build_request("chat", {"messages": [], "reasoning_effort": "low"}, False).body)
    assert sent["think"] == "low"


# --- requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("requests.json"))
def test_requests(case):
    provider = make(case["model"])
    body = provider.prepare_body(case["endpoint"], case["openai"])
    req = provider.build_request(case["endpoint"], body, case["stream"])
    assert req.method == "POST"
    assert req.url == "http://localhost:11434" + case["url"]
    assert orjson.loads(req.body) == case["upstream"]


@pytest.mark.parametrize("model", ["ollama/llava", "ollama_chat/llava"])
def test_http_image_url_is_refused(model):
    provider = make(model)
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}
    with pytest.raises(errors.BadRequestError) as exc:
        provider.build_request("chat", body, False)
    assert "base64" in exc.value.message


def test_named_tool_choice_narrows_tools_and_unknown_name_is_refused():
    provider = make("ollama_chat/llama3.1")
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("a", "b")]
    body = {"messages": [], "tools": tools, "tool_choice": {"type": "function", "function": {"name": "b"}}}
    sent = orjson.loads(provider.build_request("chat", body, False).body)
    assert [t["function"]["name"] for t in sent["tools"]] == ["b"]
    with pytest.raises(errors.BadRequestError):
        provider.build_request("chat", {**body, "tool_choice": {"type": "function", "function": {"name": "z"}}}, False)


def test_embedding_token_input_is_refused():
    with pytest.raises(errors.BadRequestError):
        make("ollama/all-minilm").build_request("embeddings", {"input": [[1, 2, 3]]}, False)


def test_embedding_dimensions_and_deployment_options():
    provider = make("ollama/all-minilm", num_ctx=512, truncate=False)
    body = provider.prepare_body("embeddings", {"input": "x", "dimensions": 4})
    sent = orjson.loads(provider.build_request("embeddings", body, False).body)
    assert sent == {"model": "all-minilm", "input": ["x"], "dimensions": 4, "options": {"num_ctx": 512},
                    "truncate": False}


# --- answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("responses.json"))
def test_responses(case):
    provider = make(case["model"])
    out = provider.parse_response(case["endpoint"], case["upstream"], {})
    prompt, completion = case["usage"]
    if case["endpoint"] == "embeddings":
        assert out["usage"] == {"prompt_tokens": prompt, "total_tokens": prompt}
        assert out["object"] == "list"
        assert len(out["data"]) == case["vectors"]
        assert [d["index"] for d in out["data"]] == list(range(case["vectors"]))
        assert all(len(d["embedding"]) == case["dimensions"] for d in out["data"])
        assert out["data"][0]["embedding"] == case["upstream"]["embeddings"][0]
        return
    assert out["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}
    choice = out["choices"][0]
    assert choice["finish_reason"] == case["finish_reason"]
    if case["endpoint"] == "completions":
        assert out["object"] == "text_completion"
        assert choice["text"] == case["text"]
        return
    assert out["object"] == "chat.completion"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == case["content"]
    if "reasoning_content" in case:
        assert choice["message"]["reasoning_content"] == case["reasoning_content"]
    calls = choice["message"].get("tool_calls") or []
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [tuple(c) for c in case.get("tool_calls", [])]
    assert len({c["id"] for c in calls}) == len(calls)
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)


@pytest.mark.parametrize("case", cases("streams.json"))
def test_streams(case):
    provider = make(case["model"])
    if "error" in case:
        with pytest.raises(errors.GatewayError) as exc:
            run_stream(provider, case["endpoint"], case["lines"], case["include_usage"])
        assert case["error"] in exc.value.message
        assert exc.value.status == case["error_status"]
        return
    chunks = run_stream(provider, case["endpoint"], case["lines"], case["include_usage"])
    body_chunks = [c for c in chunks if c["choices"]]
    assert len({c["id"] for c in chunks}) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in body_chunks if c["choices"][0]["finish_reason"]]
    assert finishes == [case["finish_reason"]]
    assert body_chunks[-1]["choices"][0]["finish_reason"] == case["finish_reason"]
    if case["endpoint"] == "completions":
        assert all(c["object"] == "text_completion" for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in body_chunks) == case["text"]
    else:
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert body_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body_chunks)
        assert text == case["content"]
        calls = [tc for c in body_chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
        assert [(tc["index"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in calls] == \
            [tuple(c) for c in case.get("tool_calls", [])]
        assert all(tc["id"] and tc["type"] == "function" for tc in calls)
    usage_chunks = [c for c in chunks if not c["choices"]]
    if case["include_usage"]:
        prompt, completion = case["usage"]
        assert usage_chunks == [usage_chunks[-1]] and chunks[-1] is usage_chunks[-1]
        assert usage_chunks[0]["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                                            "total_tokens": prompt + completion}
    else:
        assert usage_chunks == []


def test_stream_ends_after_done():
    provider = make("ollama_chat/llama3")
    state = stream_state(provider, "chat", False)
    done = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}
    assert provider.parse_stream_event("chat", orjson.dumps(done), state)
    assert provider.parse_stream_event("chat", orjson.dumps(done), state) is None


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("errors.json"))
def test_errors(case):
    provider = make("ollama_chat/llama3")
    raw = case["raw"].encode() if "raw" in case else orjson.dumps(case["body"])
    err = provider.map_error(case["status"], raw, case.get("headers") or {})
    assert isinstance(err, errors.GatewayError)
    assert err.status == case["gateway_status"]
    assert err.upstream_status == case["status"]
    assert case["message"] in err.message
    assert err.code == case["code"] or (case["code"] is None and err.code in (None, "upstream_error"))
    if case.get("retry_after"):
        assert err.headers["Retry-After"] == case["retry_after"]
    if case["code"] == "context_length_exceeded":
        assert isinstance(err, errors.ContextWindowExceededError)


# --- capabilities: refuse or drop --------------------------------------------------------------

@pytest.mark.parametrize("model, param, value", [
    ("ollama/llama3", "logit_bias", {"1": 2}),
    ("ollama/llama3", "n", 2),
    ("ollama/llama3", "logprobs", True),
    ("ollama_chat/llama3", "n", 3),
    ("ollama_chat/llama3", "top_logprobs", 2),
    ("ollama_chat/llama3", "audio", {"voice": "x"}),
])
def test_unsupported_params_refused_or_dropped(model, param, value):
    provider = make(model)
    body = {"messages": [], param: value, "temperature": 0.1}
    with pytest.raises(errors.BadRequestError) as exc:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert exc.value.param == param
    assert adapt.check_params(provider, "chat", body, drop_params=True) == {"messages": [], "temperature": 0.1}


@pytest.mark.parametrize("param, value", [("user", "u"), ("seed", 1), ("stop", ["x"]), ("n", 1),
                                          ("response_format", {"type": "json_object"}),
                                          ("frequency_penalty", 0.5), ("max_completion_tokens", 5)])
def test_supported_params_pass(param, value):
    body = {"messages": [], param: value}
    assert adapt.check_params(make("ollama_chat/llama3"), "chat", body, drop_params=False) == body


def test_tools_only_on_ollama_chat():
    settings = SimpleNamespace(add_function_to_prompt=False, drop_params=False)
    body = {"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    assert adapt.prepare_tools(make("ollama_chat/llama3"), body, settings)["tools"]
    with pytest.raises(errors.BadRequestError):
        adapt.prepare_tools(make("ollama/llama3"), body, settings)


def test_capabilities():
    gen, chat = make("ollama/llama3"), make("ollama_chat/llama3")
    assert gen.native_completions and not chat.native_completions
    assert gen.embeddings and chat.embeddings and gen.vision and chat.vision
    assert gen.stream_format == chat.stream_format == "ndjson"
    assert not gen.native_encoding and not gen.native_usage_chunk
