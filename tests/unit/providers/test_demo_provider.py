"""The built-in demo model: deterministic answers, streams and embeddings without any network."""

import base64
import math
import struct

import pytest

from gateway import providers
from gateway.providers.demo import GREETING
from gateway.config.settings import DeploymentConfig


@pytest.fixture
def demo():
    return providers.build(DeploymentConfig("demo", {"model": "demo/echo"}, {}, 0))


def chat(text, **extra):
    return {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}], **extra}


def stream_text(provider, endpoint, body):
    chunks = list(provider.stream(endpoint, body))
    if endpoint == "chat":
        return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]), chunks
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"]), chunks


def test_demo_is_local_and_streams(demo):
    assert demo.local is True
    assert demo.supports("chat", True)
    assert demo.supports("embeddings", False)


@pytest.mark.parametrize("text", ["hi", "héllo 🌍 日本", "two words"])
def test_chat_answer_is_deterministic(demo, text):
    a = demo.answer("chat", chat(text))
    b = demo.answer("chat", chat(text))
    content = a["choices"][0]["message"]["content"]
    assert content == f"{GREETING} {text}"
    assert b["choices"] == a["choices"]
    assert a["object"] == "chat.completion"
    assert a["model"] == "echo"
    assert a["choices"][0]["message"]["role"] == "assistant"
    assert a["choices"][0]["finish_reason"] == "stop"


def test_chat_answer_uses_the_last_user_message_and_text_parts(demo):
    body = {"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ignored"},
        {"role": "user", "content": [{"type": "text", "text": "second"},
                                     {"type": "image_url", "image_url": {"url": "http://x"}},
                                     {"type": "text", "text": "part"}]},
    ]}
    assert demo.answer("chat", body)["choices"][0]["message"]["content"] == f"{GREETING} second part"


def test_chat_without_user_message_answers_the_greeting(demo):
    body = {"messages": [{"role": "system", "content": "x"}]}
    assert demo.answer("chat", body)["choices"][0]["message"]["content"] == GREETING


def test_usage_counts(demo):
    answer = demo.answer("chat", chat("one two three"))
    words = len(f"{GREETING} one two three".split())
    assert answer["usage"] == {"prompt_tokens": 2 + 3, "completion_tokens": words,
                               "total_tokens": 5 + words}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_choices(demo, endpoint, n):
    body = chat("hi", n=n) if endpoint == "chat" else {"prompt": "hi", "n": n}
    answer = demo.answer(endpoint, body)
    assert [c["index"] for c in answer["choices"]] == list(range(n))
    single = len(f"{GREETING} hi".split())
    assert answer["usage"]["completion_tokens"] == single * n


@pytest.mark.parametrize("endpoint, key", [("chat", "max_tokens"), ("chat", "max_completion_tokens"),
                                           ("completions", "max_tokens")])
def test_max_tokens_truncates_with_finish_reason_length(demo, endpoint, key):
    body = chat("a b c", **{key: 3}) if endpoint == "chat" else {"prompt": "a b c", key: 3}
    choice = demo.answer(endpoint, body)["choices"][0]
    text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
    assert text == " ".join(GREETING.split()[:3])
    assert choice["finish_reason"] == "length"
    assert demo.answer(endpoint, body)["usage"]["completion_tokens"] == 3


def test_max_tokens_not_reached_is_stop(demo):
    choice = demo.answer("chat", chat("hi", max_tokens=1000))["choices"][0]
    assert choice["finish_reason"] == "stop"


def test_completions_answer(demo):
    answer = demo.answer("completions", {"prompt": "say hi"})
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == f"{GREETING} say hi"


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_completions_prompt_forms(demo, prompt):
    assert demo.answer("completions", {"prompt": prompt})["choices"][0]["text"].startswith(GREETING)


@pytest.mark.parametrize("endpoint, body", [
    ("chat", chat("héllo 🌍 日本")),
    ("chat", chat("a b c d", max_tokens=4)),
    ("completions", {"prompt": "stream me please"}),
    ("completions", {"prompt": "x y", "max_tokens": 2}),
])
def test_stream_joins_to_the_same_text(demo, endpoint, body):
    text, chunks = stream_text(demo, endpoint, body)
    answer = demo.answer(endpoint, body)["choices"][0]
    assert text == (answer["message"]["content"] if endpoint == "chat" else answer["text"])
    assert chunks[-1]["choices"][0]["finish_reason"] == answer["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    expected_object = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
    assert {c["object"] for c in chunks} == {expected_object}
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)


def test_chat_stream_first_delta_carries_the_role(demo):
    chunks = list(demo.stream("chat", chat("hi")))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_include_usage(demo, endpoint):
    base = chat("one two") if endpoint == "chat" else {"prompt": "one two"}
    body = {**base, "stream_options": {"include_usage": True}}
    chunks = list(demo.stream(endpoint, body))
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == demo.answer(endpoint, base)["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_include_usage_false(demo):
    chunks = list(demo.stream("chat", chat("x", stream_options={"include_usage": False})))
    assert all(c["choices"] for c in chunks)


# --- embeddings -------------------------------------------------------------------------------------

def decode_b64(value):
    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def as_float32(values):
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


@pytest.mark.parametrize("inp", ["hello", ["a", "b", "héllo 🌍"], [1, 2, 3], [[1, 2], [3, 4, 5]]])
def test_embeddings_base64_decodes_to_the_float_format(demo, inp):
    floats = demo.answer("embeddings", {"input": inp, "encoding_format": "float"})
    b64 = demo.answer("embeddings", {"input": inp, "encoding_format": "base64"})
    assert len(floats["data"]) == len(b64["data"])
    for f_item, b_item in zip(floats["data"], b64["data"]):
        assert isinstance(b_item["embedding"], str)
        assert decode_b64(b_item["embedding"]) == as_float32(f_item["embedding"])


def test_embeddings_default_format_is_float_and_unit_length(demo):
    answer = demo.answer("embeddings", {"input": "hello"})
    vector = answer["data"][0]["embedding"]
    assert all(isinstance(v, float) for v in vector)
    assert len(vector) == 16
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)
    assert answer["object"] == "list"
    assert answer["data"][0]["object"] == "embedding"


def test_embeddings_are_deterministic_and_input_dependent(demo):
    a = demo.answer("embeddings", {"input": ["x", "y", "x"]})["data"]
    assert a[0]["embedding"] == a[2]["embedding"]
    assert a[0]["embedding"] != a[1]["embedding"]
    assert [d["index"] for d in a] == [0, 1, 2]


@pytest.mark.parametrize("dims", [1, 8, 100, 1536])
@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_dimensions(demo, dims, fmt):
    item = demo.answer("embeddings", {"input": "x", "dimensions": dims, "encoding_format": fmt})["data"][0]
    vector = item["embedding"] if fmt == "float" else decode_b64(item["embedding"])
    assert len(vector) == dims


@pytest.mark.parametrize("inp, count, tokens", [
    ([1, 2, 3], 1, 3),
    ([[1, 2], [3]], 2, 3),
    ("one two three", 1, 3),
    (["one two", "three"], 2, 3),
])
def test_embeddings_token_ids_and_usage(demo, inp, count, tokens):
    answer = demo.answer("embeddings", {"input": inp})
    assert len(answer["data"]) == count
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
