"""Router.run / call: capability checks and shared adaptation around a provider's execute()."""

import base64
import dataclasses
import random
import struct
from collections import Counter

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.openai import OpenAIProvider
from gateway.routing.router import Router
from gateway.config.settings import from_dict
from gateway.wire.upstream import ChunkStream

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


class Recorder(Provider):
    """A local provider that records each execute() and answers with what the test queued."""

    name = "recorder"
    local = True

    def __init__(self, config, upstream_model):
        super().__init__(config, upstream_model)
        self.calls = []
        self.answers = []
        self.closed = 0

    def execute(self, ctx, endpoint, body, stream):
        self.calls.append({"ctx": ctx, "endpoint": endpoint, "body": body, "stream": stream})
        answer = self.answers.pop(0) if self.answers else self.default(endpoint)
        if stream:
            return ChunkStream(self, endpoint, iter(answer), on_close=self._on_close)
        return answer

    def _on_close(self):
        self.closed += 1

    def default(self, endpoint):
        if endpoint == "embeddings":
            return shapes.embeddings(self.model, [[0.5, -0.25], [1.0, 2.0]], 2)
        return shapes.chat_completion(self.model, [(shapes.message("ok"), "stop")], shapes.usage(1, 1))


@pytest.fixture
def make_router(monkeypatch, tmp_path):
    """make_router(config, caps): a Router over `config` (a dict, or a dict plus Settings overrides);
    `rec/<name>` models become Recorder subclasses with the capability attributes caps[<name>]."""
    real_build = providers.build

    def make(config, caps=None, transport=None, **overrides):
        caps = caps or {}

        def build(dep):
            if dep.model.startswith("rec/"):
                short = dep.model[4:]
                cls = type(f"Recorder_{short}", (Recorder,), {"name": f"rec-{short}", **caps.get(short, {})})
                return cls(dep, short)
            return real_build(dep)

        monkeypatch.setattr(providers, "build", build)
        config = {**config, "router_settings": {**(config.get("router_settings") or {}),
                                                "local_state_path": str(tmp_path / "state.sqlite")}}
        settings = from_dict(config)
        if overrides:
            settings = dataclasses.replace(settings, **overrides)
        return Router(settings, transport)

    return make


def one(model="rec/p", **settings_sections):
    return {"model_list": [{"model_name": "g", "litellm_params": {"model": model}}], **settings_sections}


def only(router, name="g"):
    (deployment,) = router.groups[name].deployments
    return deployment.provider


# --- completions answered through chat -------------------------------------------------------------

def test_completions_through_chat(make_router):
    router = make_router(one(), {"p": {"native_completions": False}})
    p = only(router)
    p.answers.append(shapes.chat_completion("p", [(shapes.message("Hi there!"), "stop")],
                                            shapes.usage(2, 3), id_="chatcmpl-7", created=11))
    body = {"model": "g", "prompt": "Say hi", "max_tokens": 5, "echo": False, "suffix": None}
    answer = router.run(p, "g", "completions", body, False)
    assert answer == {"id": "chatcmpl-7", "object": "text_completion", "created": 11, "model": "p",
                      "choices": [{"index": 0, "text": "Hi there!", "logprobs": None, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
    (call,) = p.calls
    assert call["endpoint"] == "chat" and call["stream"] is False
    assert call["body"] == {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "Say hi"}]}


def test_completions_through_chat_streamed(make_router):
    router = make_router(one(), {"p": {"native_completions": False}})
    p = only(router)
    state = {"id": "chatcmpl-s", "created": 3, "model": "p"}
    p.answers.append([
        shapes.chat_chunk(state, {"role": "assistant", "content": ""}),
        shapes.chat_chunk(state, {"content": "Hello"}),
        shapes.chat_chunk(state, {"content": " world"}),
        shapes.chat_chunk(state, {}, "stop"),
        {**state, "object": "chat.completion.chunk", "choices": [], "usage": shapes.usage(2, 2)},
    ])
    body = {"model": "g", "prompt": ["Say hello"], "stream": True, "stream_options": {"include_usage": True}}
    stream = router.run(p, "g", "completions", body, True)
    chunks = list(stream)
    stream.close()
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello world"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == shapes.usage(2, 2)
    assert p.closed == 1  # closing the mapped stream closes the provider's
    assert p.calls[0]["endpoint"] == "chat" and p.calls[0]["stream"] is True
    assert p.calls[0]["body"]["messages"] == [{"role": "user", "content": "Say hello"}]


@pytest.mark.parametrize("consume", [True, False])
def test_completions_through_chat_streamed_via_call(make_router, consume):
    """The whole path (call -> retries wrapper -> run -> map): text joined, close reaches the provider."""
    router = make_router(one(), {"p": {"native_completions": False}})
    p = only(router)
    state = {"id": "chatcmpl-s", "created": 3, "model": "p"}
    p.answers.append([shapes.chat_chunk(state, {"content": w}) for w in ("a", "b", "c")]
                     + [shapes.chat_chunk(state, {}, "stop")])
    outcome, stream = router.call("completions", {"model": "g", "prompt": "x", "stream": True}, True)
    assert outcome.group == "g"
    if consume:
        assert "".join(c["choices"][0]["text"] for c in stream) == "abc"
    stream.close()
    assert p.closed == 1


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2, 3]])
def test_completions_through_chat_refuses_batch_before_calling(make_router, prompt):
    router = make_router(one(), {"p": {"native_completions": False}})
    p = only(router)
    with pytest.raises(errors.BadRequestError) as info:
        router.run(p, "g", "completions", {"model": "g", "prompt": prompt}, False)
    assert info.value.param == "prompt"
    assert p.calls == []


def test_native_completions_go_straight_through(make_router):
    router = make_router(one())
    p = only(router)
    p.answers.append({"object": "text_completion", "choices": []})
    assert router.run(p, "g", "completions", {"prompt": "x"}, False) == {"object": "text_completion", "choices": []}
    assert p.calls[0]["endpoint"] == "completions" and p.calls[0]["body"] == {"prompt": "x"}


# --- capability refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("caps, endpoint, stream, param, what", [
    ({"embeddings": False}, "embeddings", False, "model", "embeddings"),
    ({"embeddings": False}, "embeddings", True, "model", "embeddings"),
    ({"embeddings": True}, "embeddings", True, "stream", "streaming"),
    ({"streaming": False}, "chat", True, "stream", "streaming"),
    ({"streaming": False, "native_completions": False}, "completions", True, "stream", "streaming"),
])
def test_unsupported_endpoint_refused(make_router, caps, endpoint, stream, param, what):
    router = make_router(one(), {"p": caps})
    p = only(router)
    body = {"input": "x"} if endpoint == "embeddings" else {"prompt": "x", **CHAT}
    with pytest.raises(errors.BadRequestError) as info:
        router.run(p, "g", endpoint, body, stream)
    err = info.value
    assert err.status == 400 and err.code == "unsupported_endpoint" and err.param == param
    assert f"does not support {what}" in err.message and "`g`" in err.message and "rec-p" in err.message
    assert p.calls == []


def test_non_streaming_provider_still_answers_plain(make_router):
    router = make_router(one(), {"p": {"streaming": False}})
    p = only(router)
    assert router.run(p, "g", "chat", CHAT, False)["choices"][0]["message"]["content"] == "ok"


# --- embeddings encoding_format ------------------------------------------------------------------------

def decode(b64, n):
    return list(struct.unpack(f"<{n}f", base64.b64decode(b64)))


def test_base64_applied_for_non_native_provider(make_router):
    router = make_router(one(), {"p": {"embeddings": True, "native_encoding": False}})
    p = only(router)
    answer = router.run(p, "g", "embeddings", {"input": ["a", "b"], "encoding_format": "base64"}, False)
    vectors = [item["embedding"] for item in answer["data"]]
    assert all(isinstance(v, str) for v in vectors)
    assert decode(vectors[0], 2) == [0.5, -0.25] and decode(vectors[1], 2) == [1.0, 2.0]
    assert p.calls[0]["body"]["encoding_format"] == "base64"


@pytest.mark.parametrize("fmt", ["float", None])
def test_float_left_alone_for_non_native_provider(make_router, fmt):
    router = make_router(one(), {"p": {"embeddings": True}})
    body = {"input": "a"} if fmt is None else {"input": "a", "encoding_format": fmt}
    answer = router.run(only(router), "g", "embeddings", body, False)
    assert answer["data"][0]["embedding"] == [0.5, -0.25]


def test_native_provider_answer_not_reencoded(make_router):
    router = make_router(one(), {"p": {"embeddings": True, "native_encoding": True}})
    p = only(router)
    already = base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()
    p.answers.append({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": already}]})
    answer = router.run(p, "g", "embeddings", {"input": "a", "encoding_format": "base64"}, False)
    assert answer["data"][0]["embedding"] == already
    # a native provider is trusted even when it answered floats: the router does not encode
    p.answers.append(shapes.embeddings("p", [[0.5]]))
    answer = router.run(p, "g", "embeddings", {"input": "a", "encoding_format": "base64"}, False)
    assert answer["data"][0]["embedding"] == [0.5]


def test_demo_base64_through_router_is_encoded_once(make_router):
    router = make_router(one("demo/echo"))
    p = only(router)
    answer = router.run(p, "g", "embeddings", {"input": "hello", "encoding_format": "base64"}, False)
    vector = decode(answer["data"][0]["embedding"], 16)
    assert sum(v * v for v in vector) == pytest.approx(1.0, rel=1e-5)


# --- legacy functions --------------------------------------------------------------------------------

def legacy_body(**extra):
    return {"model": "g", **CHAT, "functions": [WEATHER], "function_call": {"name": "get_weather"}, **extra}


TOOLY = {"tools": True, "supported_params": frozenset({"tools", "tool_choice", "temperature"})}


def test_legacy_functions_mapped_for_non_openai_provider(make_router):
    router = make_router(one(), {"p": TOOLY})
    p = only(router)
    call = shapes.tool_call("call_1", "get_weather", {"city": "Paris"})
    p.answers.append(shapes.chat_completion("p", [(shapes.message(None, [call]), "tool_calls")]))
    answer = router.run(p, "g", "chat", legacy_body(), False)
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": None,
                                 "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert choice["finish_reason"] == "function_call"
    sent = p.calls[0]["body"]
    assert "functions" not in sent and "function_call" not in sent
    assert sent["tools"] == [{"type": "function", "function": WEATHER}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_legacy_functions_mapped_for_non_openai_provider_streamed(make_router):
    router = make_router(one(), {"p": TOOLY})
    p = only(router)
    state = {"id": "chatcmpl-s", "created": 3, "model": "p"}
    p.answers.append([
        shapes.chat_chunk(state, {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        shapes.chat_chunk(state, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}),
        shapes.chat_chunk(state, {}, "tool_calls"),
    ])
    stream = router.run(p, "g", "chat", legacy_body(stream=True), True)
    chunks = list(stream)
    stream.close()
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert all("tool_calls" not in d for d in deltas)
    assert deltas[0]["function_call"] == {"name": "get_weather", "arguments": ""}
    assert deltas[1]["function_call"] == {"arguments": '{"city":"Paris"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
    assert p.closed == 1


def test_tools_request_not_mapped_to_function_call(make_router):
    router = make_router(one(), {"p": TOOLY})
    p = only(router)
    call = shapes.tool_call("call_1", "get_weather", {})
    p.answers.append(shapes.chat_completion("p", [(shapes.message(None, [call]), "tool_calls")]))
    body = {**CHAT, "tools": [{"type": "function", "function": WEATHER}]}
    answer = router.run(p, "g", "chat", body, False)
    assert answer["choices"][0]["message"]["tool_calls"] == [call]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


class FakeOpenAI:
    """Transport standing in for api.openai.com: answers legacy `functions` with `function_call`,
    `tools` with `tool_calls`, as OpenAI does."""

    def __init__(self):
        self.sent = []

    def send(self, provider, req, timeout, stream):
        body = orjson.loads(req.body)
        self.sent.append(body)
        if body.get("functions"):
            msg = {"role": "assistant", "content": None,
                   "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            finish = "function_call"
        else:
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
            finish = "tool_calls"
        answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
                  "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                  "usage": shapes.usage(1, 1)}
        return type("Resp", (), {"data": orjson.dumps(answer), "status": 200, "headers": {}})()


def test_legacy_functions_on_openai_deployment_answer_with_function_call(make_router):
    """A client using legacy `functions` against an OpenAI deployment gets `function_call` back."""
    router = make_router(one("openai/gpt-4o-mini"), transport=FakeOpenAI())
    p = only(router)
    assert isinstance(p, OpenAIProvider)
    answer = router.run(p, "g", "chat", legacy_body(), False)
    message = answer["choices"][0]["message"]
    assert message.get("function_call") == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert "tool_calls" not in message
    assert answer["choices"][0]["finish_reason"] == "function_call"


# --- drop_params / add_function_to_prompt / timeouts from settings --------------------------------------

LIMITED = {"supported_params": frozenset({"temperature", "max_tokens"})}


def test_drop_params_from_settings(make_router):
    router = make_router(one(litellm_settings={"drop_params": True}), {"p": LIMITED})
    p = only(router)
    body = {**CHAT, "temperature": 0.2, "top_p": 0.9, "logit_bias": {"1": 1}, "n": 1}
    router.run(p, "g", "chat", body, False)
    sent = p.calls[0]["body"]
    assert sent == {**CHAT, "temperature": 0.2, "n": 1}
    assert p.calls[0]["ctx"].drop_params is True


def test_unsupported_param_refused_without_drop_params(make_router):
    router = make_router(one(), {"p": LIMITED})
    p = only(router)
    with pytest.raises(errors.BadRequestError) as info:
        router.run(p, "g", "chat", {**CHAT, "top_p": 0.9}, False)
    assert info.value.param == "top_p" and info.value.code == "unsupported_parameter"
    assert p.calls == []


def test_tools_dropped_for_toolless_provider_with_drop_params(make_router):
    router = make_router(one(litellm_settings={"drop_params": True}), {"p": LIMITED})
    p = only(router)
    router.run(p, "g", "chat", {**CHAT, "tools": [{"type": "function", "function": WEATHER}],
                                "tool_choice": "auto"}, False)
    assert p.calls[0]["body"] == CHAT


def test_tools_refused_for_toolless_provider(make_router):
    router = make_router(one(), {"p": LIMITED})
    with pytest.raises(errors.BadRequestError) as info:
        router.run(only(router), "g", "chat", {**CHAT, "tools": [{"type": "function", "function": WEATHER}]}, False)
    assert info.value.param == "tools"


def test_add_function_to_prompt_from_settings(make_router):
    router = make_router(one(litellm_settings={"add_function_to_prompt": True}), {"p": LIMITED})
    p = only(router)
    router.run(p, "g", "chat", {**CHAT, "functions": [WEATHER]}, False)
    sent = p.calls[0]["body"]
    assert "functions" not in sent and "tools" not in sent
    assert sent["messages"][0]["role"] == "system" and '"get_weather"' in sent["messages"][0]["content"]
    assert sent["messages"][1:] == CHAT["messages"]


@pytest.mark.parametrize("sections, params, stream, timeout", [
    ({}, {}, False, 600.0),
    ({"litellm_settings": {"request_timeout": 12}}, {}, False, 12.0),
    ({"litellm_settings": {"request_timeout": 12}}, {"timeout": 3}, False, 3.0),
    ({"litellm_settings": {"request_timeout": 12}, "router_settings": {"timeout": 20}}, {}, False, 20.0),
    ({"router_settings": {"stream_timeout": 4}}, {}, True, 4.0),
    ({"router_settings": {"stream_timeout": 4}}, {"stream_timeout": 2}, True, 2.0),
    ({"router_settings": {"stream_timeout": 4}}, {}, False, 600.0),
])
def test_call_timeout(make_router, sections, params, stream, timeout):
    config = {"model_list": [{"model_name": "g", "litellm_params": {"model": "rec/p", **params}}], **sections}
    router = make_router(config)
    p = only(router)
    if stream:
        p.answers.append([])
    router.run(p, "g", "chat", CHAT, stream)
    assert p.calls[0]["ctx"].timeout == timeout


# --- name resolution: catch_all and model_group_alias ---------------------------------------------------

TWO_GROUPS = {"model_list": [{"model_name": "first", "litellm_params": {"model": "rec/a"}},
                             {"model_name": "second", "litellm_params": {"model": "rec/b"}}],
              "router_settings": {"model_group_alias": {
                  "gpt-4": "second", "hidden-one": {"model": "first", "hidden": True}, "dangling": "missing"}}}


@pytest.mark.parametrize("requested", ["anything", "second", "gpt-4", None, "", 42])
def test_catch_all_routes_every_name(make_router, requested):
    router = make_router(TWO_GROUPS, catch_all=True)
    assert router.resolve(requested) == "first"
    outcome, answer = router.call("chat", {**CHAT, "model": requested}, False)
    assert outcome.group == "first" and outcome.deployment.provider is only(router, "first")
    assert answer["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize("requested, group", [
    ("first", "first"), ("second", "second"), ("gpt-4", "second"), ("hidden-one", "first"),
    (None, "first"), ("", "first"),
])
def test_resolve_groups_and_aliases(make_router, requested, group):
    router = make_router(TWO_GROUPS)
    assert router.resolve(requested) == group
    outcome, _ = router.call("chat", {**CHAT, "model": requested}, False)
    assert outcome.group == group and outcome.deployment.provider is only(router, group)
    assert only(router, group).calls[0]["body"]["model"] == requested


@pytest.mark.parametrize("requested", ["dangling", "missing", "gpt-5", "FIRST"])
def test_resolve_unknown_is_404(make_router, requested):
    router = make_router(TWO_GROUPS)
    with pytest.raises(errors.NotFoundError) as info:
        router.resolve(requested)
    err = info.value
    assert err.status == 404 and err.code == "model_not_found" and err.param == "model"
    assert "first, second, gpt-4, hidden-one" in err.message
    assert "dangling" not in err.message.split("Available models:")[1]


def test_resolve_non_string_is_400(make_router):
    router = make_router(TWO_GROUPS)
    with pytest.raises(errors.BadRequestError):
        router.resolve(["first"])


def test_resolve_without_models_is_503(make_router):
    router = make_router({"model_list": []})
    with pytest.raises(errors.ServiceUnavailableError):
        router.resolve("x")


# --- weighted pick -------------------------------------------------------------------------------------

def pool(*params_list):
    return {"model_list": [{"model_name": "pool", "litellm_params": {"model": f"rec/d{i}", **params}}
                           for i, params in enumerate(params_list)]}


def picks(router, n=400, seed=1234):
    random.seed(seed)
    return Counter(router.groups["pool"].choose().provider.model for _ in range(n))


BIG = 10**6  # rpm/tpm limits far above what a test sends, so only their use as weights matters


@pytest.mark.parametrize("params_list, always", [
    (({"weight": 0}, {"weight": 0}, {"weight": 2}), "d2"),
    # An rpm or tpm of 0 is a limit that takes no call (issue #11), so the weights below use 1 where
    # they want "almost never": one chance in a million per pick, and the picks are seeded.
    (({"weight": 0, "rpm": BIG}, {"weight": 1, "rpm": 1000}), "d1"),       # weight beats rpm
    (({"rpm": 1, "tpm": BIG}, {"rpm": BIG, "tpm": 1}), "d1"),              # rpm beats tpm
    (({"tpm": 1}, {"tpm": 1}, {"tpm": BIG}), "d2"),
    (({"weight": 0, "rpm": 1}, {"weight": 0, "rpm": BIG}), "d1"),          # all-zero falls through
    (({"weight": 3}, {"rpm": BIG}, {"weight": None}), None),               # no key covers all: uniform
])
def test_pick_weight_precedence(make_router, params_list, always):
    router = make_router(pool(*params_list))
    counts = picks(router)
    if always is None:
        assert set(counts) == {f"d{i}" for i in range(len(params_list))}
    else:
        assert counts == Counter({always: 400})


@pytest.mark.parametrize("params_list, weights", [
    (({"weight": 1}, {"weight": 3}), [1, 3]),
    (({"weight": 0.5}, {"weight": 1.5}), [0.5, 1.5]),
    (({"rpm": BIG}, {"rpm": 3 * BIG}), [1, 3]),
    (({"tpm": BIG}, {"tpm": 3 * BIG}), [1, 3]),
])
def test_pick_is_weighted_random_choice(make_router, params_list, weights):
    router = make_router(pool(*params_list))
    group = router.groups["pool"]
    random.seed(99)
    got = [group.choose() for _ in range(200)]
    random.seed(99)
    expected = [random.choices(group.deployments, weights=weights)[0] for _ in range(200)]
    assert got == expected
    share = Counter(d.provider.model for d in got)["d1"] / 200
    assert 0.65 < share < 0.85


def test_pick_unweighted_is_uniform_choice(make_router):
    router = make_router(pool({}, {}, {}))
    group = router.groups["pool"]
    random.seed(5)
    got = [group.choose() for _ in range(60)]
    random.seed(5)
    assert got == [random.choice(group.deployments) for _ in range(60)]


def test_pick_single_deployment_draws_no_random(make_router):
    router = make_router(one())
    random.seed(3)
    state = random.getstate()
    assert router.groups["g"].choose().provider is only(router)
    assert random.getstate() == state
