"""The fake TGI/TEI server, checked with the official `huggingface_hub.InferenceClient`."""

import json

import pytest
import requests
from huggingface_hub import InferenceClient
from huggingface_hub.errors import GenerationError
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.errors import OverloadedError
from huggingface_hub.errors import ValidationError

from tests.fakes.tgi_server import CHAT_PREFIX
from tests.fakes.tgi_server import MODEL_ID
from tests.fakes.tgi_server import FakeTGI
from tests.fakes.tgi_server import fake_embedding
from tests.fakes.tgi_server import generate_answer

KEY = "hf_fake_tgi_key_0123456789"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeTGI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    fake.legacy_tools = False
    yield


@pytest.fixture
def client(fake):
    """text_generation posts to the model URL itself: TGI's compat route `/`."""
    return InferenceClient(model=fake.url, token=KEY)


@pytest.fixture
def chat(fake):
    """chat_completion appends /v1/chat/completions to base_url."""
    return InferenceClient(base_url=fake.url, token=KEY)


def test_text_generation_plain_and_details(client, fake):
    assert client.text_generation("Hello there world") == generate_answer("Hello there world")
    sent = fake.requests[-1]
    assert sent["path"] == "/" and sent["json"]["inputs"] == "Hello there world"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    out = client.text_generation("Hello there world", details=True, max_new_tokens=50, seed=7, do_sample=True)
    assert out.generated_text == generate_answer("Hello there world")
    assert out.details.finish_reason == "eos_token"
    assert out.details.generated_tokens == len(out.details.tokens)
    assert out.details.tokens[-1].special and out.details.tokens[-1].text == "</s>"
    assert out.details.seed == 7 and out.details.prefill == []


def test_text_generation_length_stop_and_full_text(client):
    out = client.text_generation("a b c", details=True, max_new_tokens=3)
    assert out.details.finish_reason == "length" and out.details.generated_tokens == 3
    assert out.generated_text == "Hello from fake"
    out = client.text_generation("a b c", details=True, stop=["prompt"])
    assert out.details.finish_reason == "stop_sequence"
    assert out.generated_text == "Hello from fake TGI! Your prompt"  # TGI keeps the stop sequence
    assert client.text_generation("a b", return_full_text=True).startswith("a bHello from fake TGI!")


def test_text_generation_best_of_prefill_grammar(client):
    out = client.text_generation("x y", details=True, best_of=2, do_sample=True, decoder_input_details=True)
    assert len(out.details.best_of_sequences) == 1
    assert out.details.best_of_sequences[0].generated_text == out.generated_text
    assert [t.text for t in out.details.prefill] == ["x", " y"]
    grammar = {"type": "json", "value": {"type": "object"}}
    assert json.loads(client.text_generation("x", grammar=grammar)) == {"answer": "Hello from fake TGI"}


def test_text_generation_stream(client):
    events = list(client.text_generation("one two", stream=True, details=True))
    text = "".join(e.token.text for e in events if not e.token.special)
    assert text == generate_answer("one two")
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == text and last.token.special
    assert last.details.finish_reason == "eos_token" and last.details.input_length == 2
    assert last.details.generated_tokens == len(events)
    assert "".join(client.text_generation("one two", stream=True)) == text + "</s>"


def test_generate_routes_raw(fake):
    auth = {"Authorization": f"Bearer {KEY}"}
    resp = requests.post(fake.url + "/generate", headers=auth,
                         json={"inputs": "hi", "parameters": {"details": True, "max_new_tokens": 2}})
    assert resp.status_code == 200
    assert resp.json()["generated_text"] == "Hello from"
    assert resp.json()["details"]["finish_reason"] == "length"
    resp = requests.post(fake.url + "/generate_stream", headers=auth, json={"inputs": "hi"}, stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith(b"data:")]
    assert events[-1]["generated_text"] == generate_answer("hi") and events[-1]["details"] is None
    assert requests.post(fake.url + "/nope", headers=auth, json={}).status_code == 404
    missing = requests.post(fake.url + "/generate", headers=auth, json={"parameters": {}})
    assert missing.status_code == 422


@pytest.mark.parametrize("kwargs, fragment", [
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences"),
    ({"max_new_tokens": 2048}, r"`inputs` tokens \+ `max_new_tokens` must be <= 2048"),
])
def test_validation_errors(client, kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment) as err:
        client.text_generation("hello", **kwargs)
    assert err.value.__cause__.response.status_code == 422  # typed from TGI's error_type


def test_long_input_and_stream_validation(client):
    with pytest.raises(ValidationError, match="`inputs` must have less than 1024 tokens. Given: 1100"):
        client.text_generation("w " * 1100)
    with pytest.raises(ValidationError, match="`best_of` != 1 is not allowed"):  # an event after a 200
        list(client.text_generation("hello", stream=True, best_of=2, do_sample=True))


def test_typed_errors(client, fake):
    with pytest.raises(OverloadedError, match="Model is overloaded"):
        client.text_generation("TRIGGER_OVERLOADED")
    with pytest.raises(GenerationError, match="CUDA out of memory"):
        client.text_generation("TRIGGER_GENERATION_ERROR")
    got = []
    with pytest.raises(GenerationError, match="connection lost"):
        for token in client.text_generation("TRIGGER_STREAM_ERROR", stream=True):
            got.append(token)
    assert got == ["Hello", " from"]
    with pytest.raises(HfHubHTTPError) as err:
        client.text_generation("TRIGGER_LOADING")
    assert err.value.response.status_code == 503
    assert err.value.response.json()["estimated_time"] == 20.0
    with pytest.raises(HfHubHTTPError) as err:
        client.text_generation("TRIGGER_RATE_LIMIT")
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "30"
    with pytest.raises(HfHubHTTPError) as err:
        InferenceClient(model=fake.url, token="hf_wrong").text_generation("hi")
    assert err.value.response.status_code == 401
    assert err.value.response.json() == {"error": "Invalid credentials in Authorization header"}


def test_chat_completion(chat, fake):
    out = chat.chat_completion([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}],
                               max_tokens=50)
    assert out.choices[0].message.content == CHAT_PREFIX + "hi you"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == MODEL_ID and out.usage.prompt_tokens == 4
    assert out.usage.completion_tokens == len(out.choices[0].message.content.split()) + 1
    assert fake.requests[-1]["path"] == "/v1/chat/completions"


def test_chat_completion_stream_with_usage(chat):
    chunks = list(chat.chat_completion([{"role": "user", "content": "stream me"}], stream=True,
                                       stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == CHAT_PREFIX + "stream me"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.prompt_tokens == 2 and all(c.usage is None for c in chunks[:-1])


def test_chat_completion_tools(chat):
    messages = [{"role": "user", "content": "what is the weather in Paris?"}]
    out = chat.chat_completion(messages, tools=TOOLS)
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    assert out.choices[0].finish_reason == "tool_calls"
    chunks = list(chat.chat_completion(messages, tools=TOOLS, stream=True))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert deltas[0].function.name == "get_weather" and all(d.index == 0 for d in deltas)
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    follow = messages + [{"role": "assistant", "tool_calls": [{"id": "0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"location": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "0", "content": "22C and sunny"}]
    assert chat.chat_completion(follow, tools=TOOLS).choices[0].message.content == "Tool said: 22C and sunny"


def test_chat_image_and_errors(chat):
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    out = chat.chat_completion([{"role": "user", "content": content}])
    assert out.choices[0].message.content == CHAT_PREFIX + "what is this (saw 1 image)"
    with pytest.raises(HfHubHTTPError, match="Model is overloaded") as err:  # chat errors are not typed
        chat.chat_completion([{"role": "user", "content": "TRIGGER_OVERLOADED"}])
    assert err.value.response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    with pytest.raises(GenerationError, match="connection lost"):
        list(chat.chat_completion([{"role": "user", "content": "TRIGGER_STREAM_ERROR now"}], stream=True))


def test_legacy_tool_shapes(fake):
    fake.legacy_tools = True
    body = {"model": "tgi", "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS}
    auth = {"Authorization": f"Bearer {KEY}"}
    out = requests.post(fake.url + "/v1/chat/completions", headers=auth, json=body).json()
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "0" and call["function"]["arguments"] == {"location": "Paris"}
    resp = requests.post(fake.url + "/v1/chat/completions", headers=auth, json={**body, "stream": True})
    events = [line[6:] for line in resp.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"]["tool_calls"] for e in events[:-1]
              if "tool_calls" in json.loads(e)["choices"][0]["delta"]]
    assert all(isinstance(d, dict) and d["function"]["name"] is None for d in deltas)
    raw = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(raw) == {"function": {"_name": "get_weather", "location": "Paris"}}


def test_feature_extraction(fake):
    tei = InferenceClient(model=fake.url + "/embed", token=KEY)
    vector = tei.feature_extraction("hello world")
    assert vector.shape == (1, 8)
    assert list(vector[0]) == pytest.approx(fake_embedding("hello world"))
    assert fake.requests[-1]["json"]["inputs"] == "hello world"
    resp = requests.post(fake.url + "/embed", headers={"Authorization": f"Bearer {KEY}"},
                         json={"inputs": ["a", "b"]})
    assert resp.json() == [fake_embedding("a"), fake_embedding("b")]
    with pytest.raises(HfHubHTTPError) as err:
        tei.feature_extraction("w " * 600)
    assert err.value.response.status_code == 413
