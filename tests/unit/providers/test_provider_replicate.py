"""Replicate translation halves (pure) from documented examples, plus execute() over a scripted transport."""

import json
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.replicate import ReplicateProvider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig
from gateway.wire.sse import SSEDecoder
from gateway.wire.upstream import CallContext

FIXTURES = Path(__file__).parent / "fixtures" / "replicate"
KEY = "r8_unit_test_token_0123456789"
BASE = "https://api.replicate.com"


def cases(name, key="cases"):
    return [pytest.param(c, id=c["id"]) for c in json.loads((FIXTURES / name).read_text())[key]]


@pytest.fixture(autouse=True)
def _no_replicate_env(monkeypatch):
    for name in ("REPLICATE_API_KEY", "REPLICATE_API_TOKEN", "REPLICATE_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def make(model="replicate/meta/meta-llama-3-8b-instruct", index=0, **params):
    params.setdefault("api_key", KEY)
    if params["api_key"] is None:
        del params["api_key"]
    return providers.build(DeploymentConfig(model_name="group", params={"model": model, **params},
                                            model_info={}, index=index))


def stream_state(provider, endpoint, include_usage=False):
    return provider.new_stream_state(endpoint, {"stream_options": {"include_usage": include_usage}})


def sse(text, split=None):
    """Decode an SSE text, fed in pieces of `split` bytes (None: at once)."""
    raw = text.encode()
    decoder = SSEDecoder()
    pieces = [raw] if split is None else [raw[i:i + split] for i in range(0, len(raw), split)]
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.close()


# --- settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model, url, version", [
    ("replicate/meta/meta-llama-3-8b-instruct", BASE + "/v1/models/meta/meta-llama-3-8b-instruct/predictions", None),
    ("replicate/replicate/hello-world:" + "a" * 64, BASE + "/v1/predictions", "a" * 64),
    ("replicate/" + "b" * 64, BASE + "/v1/predictions", "b" * 64),
    ("replicate/deployments/acme/my-llm", BASE + "/v1/deployments/acme/my-llm/predictions", None),
])
def test_model_strings(model, url, version):
    provider = make(model)
    assert isinstance(provider, ReplicateProvider)
    assert (provider.create_url, provider.version) == (url, version)


@pytest.mark.parametrize("model", ["replicate/just-a-name", "replicate/a/b/c", "replicate/deployments/x"])
def test_bad_model_strings(model):
    with pytest.raises(ConfigError, match=r"model_list\[3\]\.litellm_params\.model"):
        make(model, index=3)


def test_key_is_required():
    with pytest.raises(ConfigError, match=r"model_list\[2\]\.litellm_params\.api_key"):
        make(index=2, api_key=None)


@pytest.mark.parametrize("env", ["REPLICATE_API_KEY", "REPLICATE_API_TOKEN"])
def test_key_from_env(monkeypatch, env):
    monkeypatch.setenv(env, "r8_from_env_abcdef")
    provider = make(api_key=None)
    assert provider.headers["Authorization"] == "Bearer r8_from_env_abcdef"


def test_env_key_never_goes_to_a_custom_base(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_from_env_abcdef")
    with pytest.raises(ConfigError):
        make(api_key=None, api_base="http://elsewhere.example")
    official = make(api_key=None, api_base="https://api.replicate.com/v1")  # LiteLLM's documented default
    assert official.headers["Authorization"] == "Bearer r8_from_env_abcdef"
    monkeypatch.setenv("REPLICATE_API_BASE", "http://proxy.example/v1")
    provider = make(api_key=None)
    assert provider.api_base == "http://proxy.example"
    assert provider.headers["Authorization"] == "Bearer r8_from_env_abcdef"


@pytest.mark.parametrize("base, expected", [
    ("https://api.replicate.com/v1", BASE), ("https://api.replicate.com/", BASE), ("http://h:9", "http://h:9")])
def test_api_base_normalized(base, expected):
    assert make(api_base=base).api_base == expected


# --- requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("requests.json"))
def test_requests(case):
    provider = make(case["model"], **case["params"])
    body = provider.prepare_body(case["endpoint"], case["openai"])
    req = provider.build_request(case["endpoint"], body, case["stream"])
    assert req.method == "POST"
    assert req.url == BASE + case["url"]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert orjson.loads(req.body) == case["upstream"]


def test_data_url_image_goes_as_data_url_and_two_images_are_refused():
    provider = make("replicate/yorickvp/llava-13b")
    part = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}
    assert provider.build_input("chat", body)["image"] == "data:image/jpeg;base64,AAAA"
    body["messages"][0]["content"].append(part)
    with pytest.raises(errors.BadRequestError):
        provider.build_input("chat", body)


def test_custom_template_keys():
    provider = make(roles={"user": {"pre_message": "Q: ", "post_message": "\n"}}, final_prompt_value="A:")
    assert provider.build_input("chat", {"messages": [{"role": "user", "content": "2+2?"}]})["prompt"] == "Q: 2+2?\nA:"


# --- answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("responses.json"))
def test_responses(case):
    provider = make()
    if "error_status" in case:
        with pytest.raises(errors.GatewayError) as exc:
            provider.parse_response(case["endpoint"], case["upstream"], {})
        assert exc.value.status == case["error_status"]
        assert exc.value.code == case["error_code"]
        assert case["message"] in exc.value.message
        return
    out = provider.parse_response(case["endpoint"], case["upstream"], {})
    prompt, completion = case["usage"]
    assert out["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}
    choice = out["choices"][0]
    assert choice["finish_reason"] == case["finish_reason"]
    if case["endpoint"] == "completions":
        assert out["object"] == "text_completion" and choice["text"] == case["text"]
    else:
        assert out["object"] == "chat.completion"
        assert choice["message"] == {"role": "assistant", "content": case["content"]}


@pytest.mark.parametrize("split", [None, 1, 7])
@pytest.mark.parametrize("case", cases("streams.json"))
def test_sse_streams(case, split):
    provider = make()
    state = stream_state(provider, case["endpoint"])
    chunks = []

    def run():
        for event in sse(case["sse"], split):
            out = provider.parse_stream_event(case["endpoint"], event, state)
            if out is None:
                return
            chunks.extend(out)

    if "error" in case:
        with pytest.raises(errors.GatewayError) as exc:
            run()
        assert case["error"] in exc.value.message and exc.value.status == case["error_status"]
        return
    run()
    assert state["done"]
    assert chunks[-1]["choices"][0]["finish_reason"] == case["finish_reason"]
    if case["endpoint"] == "completions":
        assert "".join(c["choices"][0]["text"] for c in chunks) == case["text"]
    else:
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == case["content"]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)


@pytest.mark.parametrize("case", cases("streams.json", "polls"))
def test_polled_streams(case):
    provider = make()
    state = stream_state(provider, case["endpoint"], case["include_usage"])
    chunks = [c for p in case["predictions"] for c in provider.parse_stream_event(case["endpoint"], p, state)]
    body = [c for c in chunks if c["choices"]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body) == case["content"]
    assert body[-1]["choices"][0]["finish_reason"] == case["finish_reason"]
    prompt, completion = case["usage"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == prompt
    assert chunks[-1]["usage"]["completion_tokens"] == completion


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("errors.json"))
def test_errors(case):
    provider = make()
    raw = case["raw"].encode() if "raw" in case else orjson.dumps(case["body"])
    err = provider.map_error(case["status"], raw, case.get("headers") or {})
    assert err.status == case["gateway_status"] and err.upstream_status == case["status"]
    assert case["message"].lower() in err.message.lower()
    if case.get("retry_after"):
        assert err.headers["Retry-After"] == case["retry_after"]


def test_errors_are_scrubbed():
    err = make().map_error(401, orjson.dumps({"detail": f"token {KEY} is invalid"}), {})
    assert KEY not in err.message


@pytest.mark.parametrize("param, value", [("tools", [{"type": "function", "function": {"name": "f"}}]),
                                          ("n", 2), ("logprobs", True), ("response_format", {"type": "json_object"})])
def test_unsupported_params_refused_or_dropped(param, value):
    provider = make()
    body = {"messages": [], param: value}
    with pytest.raises(errors.BadRequestError):
        settings = SimpleNamespace(add_function_to_prompt=False, drop_params=False)
        adapt.check_params(provider, "chat", adapt.prepare_tools(provider, body, settings), drop_params=False)
    settings = SimpleNamespace(add_function_to_prompt=False, drop_params=True)
    dropped = adapt.check_params(provider, "chat", adapt.prepare_tools(provider, body, settings), drop_params=True)
    assert dropped == {"messages": []}


# --- execute() over a scripted transport -------------------------------------------------------

class Resp:
    """Enough of a urllib3 response for execute(): .data, read1(), close()."""

    def __init__(self, data):
        self.data = data if isinstance(data, bytes) else orjson.dumps(data)
        self._left = self.data
        self.closed = False

    def read1(self, size):
        out, self._left = self._left[:size], self._left[size:]
        return out

    def close(self):
        self.closed = True

    def drain_conn(self):
        self._left = b""

    def release_conn(self):
        self.released = True


class Transport:
    """Answers each request with the next scripted item (a dict/bytes, or a (status, body) error)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def send(self, provider, req, *, timeout, stream=False):
        self.sent.append(req)
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            raise provider.map_error(answer[0], orjson.dumps(answer[1]), {})
        return Resp(answer)


def prediction(status, output=None, urls=True, host=BASE, metrics=None, **extra):
    p = {"id": "p1", "model": "meta/x", "version": "v", "status": status, "output": output, "error": None, **extra}
    if urls:
        p["urls"] = {"get": f"{host}/v1/predictions/p1", "cancel": f"{host}/v1/predictions/p1/cancel"}
    if metrics:
        p["metrics"] = metrics
    return p


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(ReplicateProvider, "poll_start", 0.001)


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_execute_sync_mode_and_poll(fast):
    t = Transport(prediction("starting"), prediction("processing", ["a"]),
                  prediction("succeeded", ["a", "b"], metrics={"input_token_count": 3, "output_token_count": 2}))
    out = make().execute(CallContext(t, 30), "chat", CHAT, False)
    assert out["choices"][0]["message"]["content"] == "ab"
    assert out["usage"]["total_tokens"] == 5
    assert t.sent[0].headers["Prefer"] == "wait=29"
    assert [r.method for r in t.sent] == ["POST", "GET", "GET"]
    assert t.sent[1].url == BASE + "/v1/predictions/p1"


def test_execute_ignores_foreign_urls(fast):
    t = Transport(prediction("starting", host="http://169.254.169.254"), prediction("succeeded", ["x"]))
    make().execute(CallContext(t, 30), "chat", CHAT, False)
    assert t.sent[1].url == BASE + "/v1/predictions/p1"


def test_execute_timeout_cancels(monkeypatch):
    monkeypatch.setattr(ReplicateProvider, "poll_start", 0.08)
    t = Transport(prediction("starting"), prediction("processing"), {})
    with pytest.raises(errors.UpstreamTimeoutError):
        make().execute(CallContext(t, 0.2), "chat", CHAT, False)
    assert [r.method for r in t.sent] == ["POST", "GET", "POST"]
    assert t.sent[-1].method == "POST" and t.sent[-1].url.endswith("/v1/predictions/p1/cancel")


def test_execute_failed_prediction(fast):
    t = Transport({**prediction("failed"), "error": "boom"})
    with pytest.raises(errors.UpstreamError, match="boom"):
        make().execute(CallContext(t, 30), "chat", CHAT, False)


def test_execute_create_error_is_mapped():
    t = Transport((404, {"title": "Not found", "detail": "The requested resource could not be found.", "status": 404}))
    with pytest.raises(errors.NotFoundError):
        make().execute(CallContext(t, 30), "chat", CHAT, False)


SSE = "event: output\nid: 1\ndata: Hel\n\nevent: output\nid: 2\ndata: lo\n\nevent: done\nid: 3\ndata: {}\n\n"


@pytest.mark.parametrize("api_base, stream_host, follows", [
    (None, "https://stream-b.svc.rno2.c.replicate.net", True),
    (None, "https://api.replicate.com", True),
    (None, "http://stream.replicate.net", False),        # not https
    (None, "https://evil.example", False),
    ("http://127.0.0.1:9", "http://127.0.0.1:9", True),
    ("http://127.0.0.1:9", "https://stream-b.svc.rno2.c.replicate.net", False),  # only for Replicate itself
])
def test_stream_url_policy(fast, api_base, stream_host, follows):
    provider = make(**({"api_base": api_base} if api_base else {}))
    host = provider.api_base
    created = {**prediction("starting", host=host), "urls": {
        "get": f"{host}/v1/predictions/p1", "cancel": f"{host}/v1/predictions/p1/cancel",
        "stream": f"{stream_host}/v1/streams/abc"}}
    if follows:
        t = Transport(created, SSE.encode(), prediction("succeeded", ["Hel", "lo"], host=host,
                                                        metrics={"input_token_count": 1, "output_token_count": 2}))
    else:
        t = Transport(created, prediction("succeeded", ["Hel", "lo"], host=host,
                                          metrics={"input_token_count": 1, "output_token_count": 2}))
    body = {**CHAT, "stream_options": {"include_usage": True}}
    stream = provider.execute(CallContext(t, 30), "chat", body, True)
    chunks = list(stream)
    stream.close()
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert (t.sent[1].url == f"{stream_host}/v1/streams/abc") is follows
    assert all(not r.url.startswith("https://evil") for r in t.sent)
    assert orjson.loads(t.sent[0].body)["stream"] is True
    assert "Prefer" not in t.sent[0].headers


def test_stream_closed_early_cancels_prediction(fast):
    created = {**prediction("starting"), "urls": {"get": BASE + "/v1/predictions/p1",
                                                  "cancel": BASE + "/v1/predictions/p1/cancel",
                                                  "stream": BASE + "/v1/streams/abc"}}
    t = Transport(created, SSE.encode(), {})
    stream = make().execute(CallContext(t, 30), "chat", CHAT, True)
    next(iter(stream))
    stream.close()
    assert t.sent[-1].url == BASE + "/v1/predictions/p1/cancel"


def test_stream_cut_before_done_is_an_error(fast):
    created = {**prediction("starting"), "urls": {"stream": BASE + "/v1/streams/abc"}}
    t = Transport(created, b"event: output\nid: 1\ndata: Hel\n\n", {})
    stream = make().execute(CallContext(t, 30), "chat", CHAT, True)
    with pytest.raises(errors.UpstreamError, match="ended before"):
        list(stream)
