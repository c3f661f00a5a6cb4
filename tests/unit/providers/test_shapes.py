"""OpenAI-shaped builders and message-part helpers (gateway.providers.shapes)."""

import base64
import struct

import orjson
import pytest

from gateway.errors import BadRequestError
from gateway.providers import shapes


# --- usage / message / tool_call ----------------------------------------------------------------

@pytest.mark.parametrize("prompt, completion, expected", [
    (3, 4, {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    (None, 5, {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}),
    (7, None, {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}),
    (None, None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
    ("12", 3.0, {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}),
])
def test_usage(prompt, completion, expected):
    out = shapes.usage(prompt, completion)
    assert out == expected
    assert all(type(v) is int for v in out.values())


@pytest.mark.parametrize("content, calls, expected", [
    ("hi", None, {"role": "assistant", "content": "hi"}),
    (None, None, {"role": "assistant", "content": None}),
    (None, [{"id": "c"}], {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}),
    ("x", [], {"role": "assistant", "content": "x"}),
])
def test_message(content, calls, expected):
    assert shapes.message(content, calls) == expected


@pytest.mark.parametrize("arguments, expected", [
    ('{"city": "Paris"}', '{"city": "Paris"}'),   # strings are kept byte for byte
    ({"city": "Paris", "days": 3}, '{"city":"Paris","days":3}'),
    ({}, "{}"),
    (None, "{}"),
    ({"q": "naïve ✓"}, '{"q":"naïve ✓"}'),
    ("", ""),
])
def test_tool_call_arguments(arguments, expected):
    call = shapes.tool_call("call_9", "get_weather", arguments)
    assert call == {"id": "call_9", "type": "function",
                    "function": {"name": "get_weather", "arguments": expected}}
    if isinstance(arguments, dict):
        assert orjson.loads(call["function"]["arguments"]) == arguments


@pytest.mark.parametrize("call_id", [None, ""])
def test_tool_call_generates_id(call_id):
    first = shapes.tool_call(call_id, "f", {})
    second = shapes.tool_call(call_id, "f", {})
    assert first["id"].startswith("call_") and len(first["id"]) == len("call_") + 24
    assert first["id"] != second["id"]


# --- chat_completion / chat_chunk / stream_state / embeddings ----------------------------------------

def test_chat_completion_shape():
    msg = shapes.message("Hello")
    call_msg = shapes.message(None, [shapes.tool_call("c1", "f", {"a": 1})])
    out = shapes.chat_completion("m-1", [(msg, "stop"), (call_msg, "tool_calls")],
                                 shapes.usage(5, 2), id_="chatcmpl-x", created=1700000000)
    assert out == {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1700000000, "model": "m-1",
        "choices": [
            {"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"},
            {"index": 1, "message": call_msg, "logprobs": None, "finish_reason": "tool_calls"},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_chat_completion_defaults():
    out = shapes.chat_completion("m", [(shapes.message("x"), "length")])
    assert out["id"].startswith("chatcmpl-") and len(out["id"]) == len("chatcmpl-") + 24
    assert isinstance(out["created"], int) and out["created"] > 1_600_000_000
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert shapes.chat_completion("m", [])["choices"] == []


@pytest.mark.parametrize("prefix", ["chatcmpl", "cmpl"])
def test_stream_state(prefix):
    state = shapes.stream_state("m", prefix)
    assert state["id"].startswith(prefix + "-")
    assert state["model"] == "m" and state["usage"] is None
    assert state["role_sent"] is False and state["tools"] == {}
    assert shapes.stream_state("m", prefix)["id"] != state["id"]


@pytest.mark.parametrize("delta, finish, index, expected_delta", [
    ({"content": "Hi"}, None, 0, {"content": "Hi"}),
    (None, "stop", 0, {}),
    ({"role": "assistant", "content": ""}, None, 2, {"role": "assistant", "content": ""}),
])
def test_chat_chunk(delta, finish, index, expected_delta):
    state = {"id": "chatcmpl-1", "created": 42, "model": "m"}
    assert shapes.chat_chunk(state, delta, finish, index) == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 42, "model": "m",
        "choices": [{"index": index, "delta": expected_delta, "logprobs": None, "finish_reason": finish}]}


@pytest.mark.parametrize("vectors, tokens, expected_tokens", [
    ([[0.1, 0.2], [0.3, 0.4]], 6, 6),
    ([[1.0]], None, 0),
    ([], 0, 0),
])
def test_embeddings(vectors, tokens, expected_tokens):
    out = shapes.embeddings("emb", vectors, tokens)
    assert out == {"object": "list", "model": "emb",
                   "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                   "usage": {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}}


# --- encode_embedding ----------------------------------------------------------------------------

@pytest.mark.parametrize("vector", [
    [0.5, -1.25, 3.0, 0.0],
    [0.1, 0.2, -0.3],
    [1e-30, -1e30, 123456.789],
    [],
])
def test_encode_embedding_base64_round_trip(vector):
    encoded = shapes.encode_embedding(vector, "base64")
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded, validate=True)
    assert len(raw) == 4 * len(vector)
    decoded = list(struct.unpack(f"<{len(vector)}f", raw))
    assert decoded == pytest.approx(vector, rel=1e-6)


def test_encode_embedding_is_little_endian_float32():
    assert base64.b64decode(shapes.encode_embedding([1.0], "base64")) == b"\x00\x00\x80\x3f"


@pytest.mark.parametrize("vector, fmt", [
    ([0.5, 0.25], "float"),
    ([0.5, 0.25], None),
    ("AACAPw==", "base64"),   # already encoded: not encoded twice
])
def test_encode_embedding_passthrough(vector, fmt):
    assert shapes.encode_embedding(vector, fmt) is vector


# --- text_of ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ("plain", "plain"),
    ("", ""),
    (None, ""),
    ([{"type": "text", "text": "a "}, {"type": "text", "text": "b"}], "a b"),
    ([{"type": "input_text", "text": "x"}, {"type": "text", "text": "y"}], "xy"),
    ([{"type": "image_url", "image_url": {"url": "https://e.com/i.png"}}, {"type": "text", "text": "cap"}], "cap"),
    ([{"type": "text"}], ""),
    (["loose string", 3, None, {"type": "text", "text": "ok"}], "ok"),
    ([], ""),
    ({"type": "text", "text": "dict"}, ""),
    (42, ""),
])
def test_text_of(content, expected):
    assert shapes.text_of(content) == expected


# --- embedding_inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("hello", ["hello"]),
    (["a", "b"], ["a", "b"]),
    ([""], [""]),
])
def test_embedding_inputs(value, expected):
    assert shapes.embedding_inputs({"input": value}) == expected


@pytest.mark.parametrize("value", [
    [1, 2, 3],            # token ids
    [[1, 2], [3]],        # batches of token ids
    ["a", 1],
    None,
    42,
    {"text": "a"},
])
def test_embedding_inputs_refused(value):
    with pytest.raises(BadRequestError) as info:
        shapes.embedding_inputs({"input": value})
    assert info.value.status == 400 and info.value.param == "input"


def test_embedding_inputs_missing():
    with pytest.raises(BadRequestError):
        shapes.embedding_inputs({})


# --- image_source ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_url, expected", [
    ({"url": "data:image/jpeg;base64,/9j/4AAQ"}, ("base64", "image/jpeg", "/9j/4AAQ")),
    ({"url": "data:image/png;base64,iVBORw0KGgo="}, ("base64", "image/png", "iVBORw0KGgo=")),
    ({"url": "data:image/svg+xml;base64,PHN2Zz4="}, ("base64", "image/svg+xml", "PHN2Zz4=")),
    ({"url": "data:;base64,AAAA"}, ("base64", "image/png", "AAAA")),
    ({"url": "https://example.com/cat.png", "detail": "high"}, ("url", None, "https://example.com/cat.png")),
    ({"url": "http://10.0.0.1/x.jpg"}, ("url", None, "http://10.0.0.1/x.jpg")),
    ("https://example.com/bare-string.png", ("url", None, "https://example.com/bare-string.png")),
])
def test_image_source(image_url, expected):
    assert shapes.image_source({"type": "image_url", "image_url": image_url}) == expected


@pytest.mark.parametrize("image_url", [
    {"url": "data:image/png,rawbytes"},           # data URL without ;base64
    {"url": "data:text/plain,hello"},
    {"url": "file:///etc/passwd"},
    {"url": "javascript:alert(1)"},
    {"url": "ftp://example.com/a.png"},
    {"url": "//example.com/a.png"},
    {"url": "/etc/passwd"},
    {"url": ""},
    {"url": None},
    {},
    None,
    "",
])
def test_image_source_refused(image_url):
    with pytest.raises(BadRequestError) as info:
        shapes.image_source({"type": "image_url", "image_url": image_url})
    assert info.value.status == 400 and info.value.param == "messages"


# --- tool_arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, expected", [
    ('{"city": "Paris"}', {"city": "Paris"}),
    ({"already": "dict"}, {"already": "dict"}),
    ("", {}),
    (None, {}),
    ("[1, 2]", {"value": [1, 2]}),
    ("3", {"value": 3}),
    ('"text"', {"value": "text"}),
    ("null", {"value": None}),
])
def test_tool_arguments(arguments, expected):
    assert shapes.tool_arguments(arguments) == expected


@pytest.mark.parametrize("arguments", ["{city: Paris}", '{"a": 1', "not json", "{'a': 1}"])
def test_tool_arguments_invalid_json(arguments):
    with pytest.raises(BadRequestError) as info:
        shapes.tool_arguments(arguments)
    assert info.value.status == 400 and info.value.param == "messages"


# --- legacy_functions_to_tools -----------------------------------------------------------------------

FUNCS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
         {"name": "get_time", "description": "now"}]


@pytest.mark.parametrize("function_call, tool_choice", [
    (None, None),
    ("auto", "auto"),
    ("none", "none"),
    ({"name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}),
    ({}, None),
])
def test_legacy_functions_to_tools(function_call, tool_choice):
    body = {"model": "m", "messages": [], "functions": FUNCS, "temperature": 0}
    if function_call is not None:
        body["function_call"] = function_call
    snapshot = orjson.dumps(body)
    out = shapes.legacy_functions_to_tools(body)
    assert out["tools"] == [{"type": "function", "function": f} for f in FUNCS]
    assert "functions" not in out and "function_call" not in out
    assert out.get("tool_choice") == tool_choice
    assert out["temperature"] == 0 and out["model"] == "m"
    assert orjson.dumps(body) == snapshot  # input untouched


@pytest.mark.parametrize("body", [
    {"messages": []},
    {"messages": [], "functions": []},
    {"messages": [], "functions": FUNCS, "tools": [{"type": "function", "function": {"name": "x"}}]},
])
def test_legacy_functions_to_tools_noop(body):
    assert shapes.legacy_functions_to_tools(body) is body


def test_new_id():
    assert shapes.new_id().startswith("chatcmpl-")
    assert shapes.new_id("cmpl").startswith("cmpl-")
    assert len({shapes.new_id() for _ in range(50)}) == 50
