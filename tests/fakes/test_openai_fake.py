"""Check the fake OpenAI / Azure upstream with the official ``openai`` SDK.

If the SDK parses the fake's answers (and raises the right typed errors), the
fake is faithful enough for the gateway's tests to rely on it.
"""
import base64
import http.client
import io
import json
import socket
import struct
import time
import wave

import openai
import pytest
import requests

from .openai_server import (
    ANSWER_PREFIX, FAKE_PNG, FLAGGED_SCORE, GPT_IMAGE_OUTPUT_TOKENS, MODERATION_CATEGORIES, FakeOpenAI,
    fake_embedding, fake_speech, mask_key, parse_multipart, speech_size, wav_bytes, wav_duration,
)

KEY = "sk-fake-upstream-0123456789"
AZURE_KEY = "azure-key-abc"
API_VERSION = "2024-02-01"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}]


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(api_key=KEY, azure_key=AZURE_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()
    yield


@pytest.fixture(scope="module")
def client(fake):
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0, timeout=5)


@pytest.fixture(scope="module")
def azure(fake):
    return openai.AzureOpenAI(azure_endpoint=fake.url, api_key=AZURE_KEY, api_version=API_VERSION,
                              max_retries=0, timeout=5)


def user(text):
    return [{"role": "user", "content": text}]


# ---- chat -----------------------------------------------------------------

def test_chat_plain(client):
    resp = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": "be brief"}, *user("hi there")])
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o"
    assert resp.system_fingerprint
    assert abs(resp.created - time.time()) < 60
    [choice] = resp.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER_PREFIX + "hi there"
    assert choice.finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 6, 10)


def test_chat_content_parts_and_last_user_message(client):
    resp = client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "part one"},
                                     {"type": "text", "text": "part two"}]},
    ])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "part one part two"


def test_chat_n_choices(client):
    resp = client.chat.completions.create(model="gpt-4o", messages=user("hello"), n=2)
    assert [c.index for c in resp.choices] == [0, 1]
    assert {c.message.content for c in resp.choices} == {ANSWER_PREFIX + "hello"}
    assert resp.usage.completion_tokens == 10


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_truncates(client, param):
    resp = client.chat.completions.create(model="gpt-4o", messages=user("a b c d"), **{param: 2})
    assert resp.choices[0].message.content == "Hello from"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 2


def test_chat_tool_call(client):
    resp = client.chat.completions.create(model="gpt-4o", messages=user("What's the weather in Paris?"),
                                          tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


def test_chat_tools_without_trigger_word_answer_text(client):
    resp = client.chat.completions.create(model="gpt-4o", messages=user("hello"), tools=TOOLS)
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hello"


def test_chat_stream(client):
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("stream me please"),
                                                 stream=True))
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert pieces[0] == "Hello "  # one word per chunk, trailing space kept
    assert "".join(pieces) == ANSWER_PREFIX + "stream me please"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.usage is None for c in chunks)


def test_chat_stream_include_usage(client):
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("count me"), stream=True,
                                                 stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (2, 6, 8)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_wire_format(fake):
    """Raw bytes: SSE over chunked transfer encoding, usage: null on every chunk, [DONE] at the end."""
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    body = json.dumps({"model": "gpt-4o", "messages": user("hi"), "stream": True,
                       "stream_options": {"include_usage": True}})
    conn.request("POST", "/v1/chat/completions", body,
                 {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("x-request-id") and resp.getheader("openai-processing-ms") is not None
    events = [e for e in resp.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    parsed = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" in p and p["usage"] is None for p in parsed[:-1])
    assert parsed[-1]["usage"]["total_tokens"] == 1 + 5
    # keep-alive: a second request goes over the same socket
    sock = conn.sock
    conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == str(len(resp.read()))
    assert conn.sock is sock
    conn.close()


def test_chat_stream_tool_call(client):
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("weather?"), tools=TOOLS,
                                                 stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices[0].delta.tool_calls]
    first = deltas[0].tool_calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather"
    assert len(deltas) > 2  # arguments are split over several deltas
    assert all(d.tool_calls[0].id is None and d.tool_calls[0].index == 0 for d in deltas[1:])
    args = "".join(d.tool_calls[0].function.arguments for d in deltas)
    assert json.loads(args) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_stream_error_event(client):
    stream = client.chat.completions.create(model="stream-error", messages=user("hi"), stream=True)
    got = []
    with pytest.raises(openai.APIError, match="upstream stream broke"):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Hello ", "from "]


# ---- text completions -----------------------------------------------------

def test_completions(client):
    resp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say this")
    assert resp.object == "text_completion"
    assert resp.id.startswith("cmpl-")
    assert resp.choices[0].text == ANSWER_PREFIX + "say this"
    assert resp.choices[0].logprobs is None and resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == 2 + 6


def test_completions_prompt_list(client):
    resp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["one", "two"], max_tokens=3)
    assert [(c.index, c.text, c.finish_reason) for c in resp.choices] == [
        (0, "Hello from fake", "length"), (1, "Hello from fake", "length")]


def test_completions_stream(client):
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="go", stream=True,
                                            stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == ANSWER_PREFIX + "go"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


# ---- embeddings -----------------------------------------------------------

def test_embeddings_base64_default_matches_float(client, fake):
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert fake.requests[-1]["json"]["encoding_format"] == "base64"  # the SDK asks for base64...
    floats = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"],
                                      encoding_format="float")
    assert default.object == "list" and default.model == "text-embedding-3-small"
    assert [d.index for d in default.data] == [0, 1]
    for a, b in zip(default.data, floats.data):  # ...and decodes it to the same floats
        assert len(a.embedding) == 8
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6, abs=1e-7)
    assert default.data[0].embedding != default.data[1].embedding
    assert floats.data[0].embedding == pytest.approx(fake_embedding("alpha"))
    assert default.usage.prompt_tokens == default.usage.total_tokens == 2


def test_embeddings_base64_wire_format(fake):
    resp = requests.post(fake.url + "/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "m", "input": "x", "encoding_format": "base64", "dimensions": 4})
    raw = base64.b64decode(resp.json()["data"][0]["embedding"])
    assert struct.unpack("<4f", raw) == tuple(fake_embedding("x", 4))


def test_embeddings_dimensions_and_token_inputs(client):
    resp = client.embeddings.create(model="m", input="hello world", dimensions=16, encoding_format="float")
    assert len(resp.data[0].embedding) == 16
    assert sum(v * v for v in resp.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    tokens = client.embeddings.create(model="m", input=[1, 2, 3], encoding_format="float")
    assert len(tokens.data) == 1 and tokens.usage.prompt_tokens == 3
    batch = client.embeddings.create(model="m", input=[[1, 2], [3]], encoding_format="float")
    assert len(batch.data) == 2 and batch.usage.prompt_tokens == 3


def test_embeddings_invalid_input(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="m", input=[])
    assert err.value.param == "input"


# ---- models ---------------------------------------------------------------

def test_models_list(client, fake):
    models = client.models.list()
    assert [m.id for m in models] == fake.models
    assert all(m.object == "model" and m.owned_by == "openai" for m in models)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# ---- errors ---------------------------------------------------------------

@pytest.mark.parametrize("model, exc, status, code", [
    ("fail-400", openai.BadRequestError, 400, None),
    ("context-length", openai.BadRequestError, 400, "context_length_exceeded"),
    ("fail-401", openai.AuthenticationError, 401, "invalid_api_key"),
    ("fail-403", openai.PermissionDeniedError, 403, None),
    ("fail-404", openai.NotFoundError, 404, "model_not_found"),
    ("fail-429", openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("fail-500", openai.InternalServerError, 500, None),
    ("fail-503", openai.InternalServerError, 503, None),
])
def test_error_triggers(client, model, exc, status, code):
    with pytest.raises(exc) as err:
        client.chat.completions.create(model=model, messages=user("hi"))
    assert err.value.status_code == status
    assert err.value.code == code
    assert err.value.type
    assert err.value.response.headers["x-request-id"]
    assert "openai-processing-ms" in err.value.response.headers


def test_error_details(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="fail-400", messages=user("hi"))
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="context-length", prompt="hi")
    assert "maximum context length is 4097 tokens" in err.value.message
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="fail-404", input="x")
    assert "The model `fail-404` does not exist" in err.value.message


def test_rate_limit_headers(client):
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="fail-429", messages=user("hi"))
    headers = err.value.response.headers
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.type == "requests"


def test_wrong_key_is_masked(fake):
    bad = "sk-wrong-secret-key-123456"
    c = openai.OpenAI(base_url=fake.url + "/v1", api_key=bad, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        c.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert err.value.code == "invalid_api_key"
    assert bad not in err.value.message
    assert mask_key(bad) in err.value.message and mask_key(bad).startswith("sk-wr")


def test_missing_key_is_401(fake):
    resp = requests.get(fake.url + "/v1/models")
    assert resp.status_code == 401
    assert "didn't provide an API key" in resp.json()["error"]["message"]


def test_bad_json_and_unknown_path(fake):
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    resp = requests.post(fake.url + "/v1/chat/completions", data=b"{nope", headers=auth)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("We could not parse the JSON body of your request")
    resp = requests.post(fake.url + "/v1/nothing", json={}, headers=auth)
    assert resp.status_code == 404
    assert resp.json()["error"] == {"message": "Invalid URL (POST /v1/nothing)",
                                    "type": "invalid_request_error", "param": None, "code": None}
    assert resp.headers["x-request-id"]


def test_malformed_body(client, fake):
    resp = requests.post(fake.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "malformed", "messages": user("hi")})
    assert resp.status_code == 200 and resp.text == "not json at all"
    assert resp.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):  # the SDK's JSON decoding fails
        client.chat.completions.create(model="malformed", messages=user("hi"))


def test_slow_and_client_timeout(client, fake):
    fake.slow_seconds = 0.3
    try:
        start = time.monotonic()
        resp = client.chat.completions.create(model="slow", messages=user("hi"))
        assert time.monotonic() - start >= 0.3
        assert resp.choices[0].message.content == ANSWER_PREFIX + "hi"
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.1).chat.completions.create(model="slow", messages=user("hi"))
        # the fake notices the abandoned request while it is still "thinking"
        assert fake.wait_for_disconnect(2)
        assert fake.disconnects[0]["model"] == "slow" and fake.disconnects[0]["chunks_sent"] == 0
    finally:
        fake.slow_seconds = 2.0


# ---- Azure ----------------------------------------------------------------

def test_azure_chat(azure, fake):
    resp = azure.chat.completions.create(model="my-deploy", messages=user("hi azure"))
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hi azure"
    assert resp.model == "my-deploy"
    req = fake.requests[-1]
    assert req["path"] == "/openai/deployments/my-deploy/chat/completions"
    assert req["query"] == {"api-version": API_VERSION}
    assert req["headers"]["api-key"] == AZURE_KEY


def test_azure_stream_and_embeddings(azure):
    chunks = list(azure.chat.completions.create(model="dep", messages=user("x"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER_PREFIX + "x"
    emb = azure.embeddings.create(model="emb-deploy", input="hello")
    assert emb.data[0].embedding == pytest.approx(fake_embedding("hello"), rel=1e-6)
    comp = azure.completions.create(model="instruct", prompt="p")
    assert comp.choices[0].text == ANSWER_PREFIX + "p"


def test_azure_triggers_use_deployment_name(azure):
    with pytest.raises(openai.RateLimitError):
        azure.chat.completions.create(model="fail-429", messages=user("hi"))


def test_azure_auth(fake):
    wrong = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="nope", api_version=API_VERSION,
                               max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="dep", messages=user("hi"))
    assert err.value.body["code"] == "401"
    assert err.value.body["message"].startswith("Access denied due to invalid subscription key")
    entra = openai.AzureOpenAI(azure_endpoint=fake.url, azure_ad_token="entra-token", api_version=API_VERSION,
                               max_retries=0)
    assert entra.chat.completions.create(model="dep", messages=user("hi")).choices[0].message.content
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer entra-token"


def test_azure_missing_api_version(fake):
    resp = requests.post(fake.url + "/openai/deployments/dep/chat/completions",
                         headers={"api-key": AZURE_KEY}, json={"messages": user("hi")})
    assert resp.status_code == 404
    assert resp.json() == {"error": {"code": "404", "message": "Resource not found"}}


# ---- recording & disconnects ----------------------------------------------

def test_requests_are_recorded(client, fake):
    client.chat.completions.create(model="gpt-4o", messages=user("rec"), temperature=0.5,
                                   extra_headers={"X-Trace": "abc"}, extra_query={"q": "1"})
    [req] = fake.requests
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["query"] == {"q": "1"}
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["headers"]["x-trace"] == "abc"
    assert req["json"] == {"model": "gpt-4o", "messages": user("rec"), "temperature": 0.5}
    fake.reset()
    assert fake.requests == []


def test_disconnect_mid_stream(fake):
    assert not fake.wait_for_disconnect(0.05)
    resp = requests.post(fake.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "slow-stream", "messages": user("hi"), "stream": True},
                         stream=True, timeout=5)
    got = []
    for line in resp.iter_lines():
        if line:
            got.append(json.loads(line[len(b"data: "):]))
        if len(got) == 2:
            break
    closed_at = time.monotonic()
    resp.close()
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert got[1]["choices"][0]["delta"] == {"content": "tick0 "}
    assert fake.wait_for_disconnect(5)
    [gone] = fake.disconnects
    assert gone["path"] == "/v1/chat/completions" and gone["model"] == "slow-stream"
    assert 2 <= gone["chunks_sent"] < fake.slow_stream_chunks
    assert gone["time"] - closed_at < 1.0


# ---- failure modes on demand ----------------------------------------------

def test_count_per_model(client, fake):
    assert fake.count("gpt-4o") == 0
    client.chat.completions.create(model="gpt-4o", messages=user("a"))
    client.embeddings.create(model="gpt-4o", input="x")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-500", messages=user("a"))
    assert (fake.count("gpt-4o"), fake.count("fail-500"), fake.count("other")) == (2, 1, 0)
    fake.reset()
    assert fake.count("gpt-4o") == 0


def test_flaky_fails_first_n_then_answers(client, fake):
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="flaky-2", messages=user("hi"))
        assert err.value.status_code == 500 and err.value.type == "server_error"
    resp = client.chat.completions.create(model="flaky-2", messages=user("hi"))
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hi"
    assert client.chat.completions.create(model="flaky-2", messages=user("hi")).choices
    assert fake.count("flaky-2") == 4
    # counters are per model name, and reset() starts them over
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="flaky-1", messages=user("hi"))
    fake.reset()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="flaky-2", messages=user("hi"))


def test_flaky_zero_and_azure(azure, fake):
    assert azure.chat.completions.create(model="flaky-0", messages=user("hi")).choices
    with pytest.raises(openai.InternalServerError):
        azure.chat.completions.create(model="flaky-1", messages=user("hi"))
    assert azure.chat.completions.create(model="flaky-1", messages=user("hi")).choices
    assert fake.count("flaky-1") == 2


def test_ratelimit_n(client, fake):
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="ratelimit-1", messages=user("hi"))
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="ratelimit-1", messages=user("hi")).choices
    assert fake.count("ratelimit-1") == 2


def test_hang_until_client_goes_away(client, fake):
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(model="hang", messages=user("hi"))
    assert time.monotonic() - started < 3
    assert fake.wait_for_disconnect(3)
    assert fake.disconnects[0]["model"] == "hang" and fake.disconnects[0]["chunks_sent"] == 0
    assert fake.count("hang") == 1


def test_hang_answers_after_hang_seconds(client, fake):
    fake.hang_seconds = 0.3
    try:
        started = time.monotonic()
        resp = client.chat.completions.create(model="hang", messages=user("hi"))
        assert time.monotonic() - started >= 0.3
        assert resp.choices[0].message.content == ANSWER_PREFIX + "hi"
    finally:
        fake.hang_seconds = 30.0


def test_reset_closes_without_an_answer(client, fake):
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="reset", messages=user("hi"))
    # raw socket: no status line at all, the connection is reset (or at best closed)
    sock = socket.create_connection((fake.host, fake.port), timeout=5)
    body = json.dumps({"model": "reset", "messages": user("hi")}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        data = b""
    sock.close()
    assert data == b""
    assert fake.count("reset") == 2
    # the fake itself keeps serving
    assert client.chat.completions.create(model="gpt-4o", messages=user("hi")).choices


def test_stall_stream(fake):
    fake.stall_seconds = 0.6
    try:
        started = time.monotonic()
        resp = requests.post(fake.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                             json={"model": "stall-stream", "messages": user("hi"), "stream": True},
                             stream=True, timeout=5)
        arrivals = []
        for line in resp.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, line[len(b"data: "):]))
        events = [json.loads(data) for _, data in arrivals[:-1]]
        assert arrivals[-1][1] == b"[DONE]"
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["Hello ", "from "]
        assert arrivals[2][0] < 0.5 <= arrivals[3][0]  # the stall comes after two content chunks
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        assert text == ANSWER_PREFIX + "hi"
    finally:
        fake.stall_seconds = 10.0


def test_stall_stream_notices_client_hang_up(client, fake):
    got = []
    with client.with_options(timeout=5).chat.completions.create(model="stall-stream", messages=user("hi"),
                                                                stream=True) as stream:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
            if len(got) == 3:
                break
    assert got == ["", "Hello ", "from "]
    assert fake.wait_for_disconnect(3)
    assert fake.disconnects[0]["model"] == "stall-stream" and fake.disconnects[0]["chunks_sent"] == 3


def test_stall_stream_without_stream_answers(client):
    resp = client.chat.completions.create(model="stall-stream", messages=user("hi"))
    assert resp.choices[0].message.content == ANSWER_PREFIX + "hi"


# ---- Responses API --------------------------------------------------------

RESP_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}}]
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGE_EVENTS = ["response.output_item.added", "response.content_part.added"]
MESSAGE_DONE_EVENTS = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def sse_events(raw: str):
    """Parse an SSE body into (event name, data) pairs."""
    out = []
    for block in filter(None, raw.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines.get("event"), json.loads(lines["data"])))
    return out


def test_responses_create_string_input(client, fake):
    resp = client.responses.create(model="gpt-4o", input="hi there")
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status == "completed" and resp.model == "gpt-4o"
    assert abs(resp.created_at - time.time()) < 60
    [message] = resp.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.role == "assistant" and message.status == "completed"
    [part] = message.content
    assert part.type == "output_text" and part.annotations == []
    assert part.text == resp.output_text == ANSWER_PREFIX + "hi there"
    usage = resp.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 6, 8)
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    # the echo fields the API returns, with its defaults
    assert resp.error is None and resp.incomplete_details is None and resp.previous_response_id is None
    assert (resp.instructions, resp.max_output_tokens, resp.user) == (None, None, None)
    assert (resp.temperature, resp.top_p, resp.tool_choice, resp.truncation) == (1.0, 1.0, "auto", "disabled")
    assert resp.parallel_tool_calls is True and resp.store is True and resp.tools == [] and resp.metadata == {}
    assert resp.text.format.type == "text"
    assert (resp.reasoning.effort, resp.reasoning.summary) == (None, None)
    raw = fake.responses[resp.id]
    assert "output_text" not in raw  # the SDK computes it
    [req] = fake.requests
    assert req["method"] == "POST" and req["path"] == "/v1/responses"
    assert req["json"] == {"model": "gpt-4o", "input": "hi there"}
    assert fake.count("gpt-4o") == 1


def test_responses_echo_fields_and_instructions(client):
    resp = client.responses.create(
        model="gpt-4o", input="one two", instructions="be very brief", temperature=0.2, top_p=0.5,
        max_output_tokens=50, metadata={"k": "v"}, user="u-1", parallel_tool_calls=False, truncation="auto",
        text={"format": {"type": "text"}}, reasoning={"effort": "low"}, include=["message.output_text.logprobs"])
    assert resp.output_text == ANSWER_PREFIX + "one two"
    assert (resp.instructions, resp.temperature, resp.top_p, resp.max_output_tokens) == (
        "be very brief", 0.2, 0.5, 50)
    assert (resp.metadata, resp.user, resp.parallel_tool_calls, resp.truncation) == ({"k": "v"}, "u-1", False, "auto")
    assert resp.reasoning.effort == "low" and resp.reasoning.summary is None
    assert resp.usage.input_tokens == 2 + 3  # the instructions are billed too


def test_responses_list_input_content_parts(client):
    resp = client.responses.create(model="gpt-4o", input=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "part one"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
            {"type": "input_text", "text": "part two"}]},
    ])
    assert resp.output_text == ANSWER_PREFIX + "part one part two"
    assert "(turns:" not in resp.output_text  # only with previous_response_id
    assert resp.usage.input_tokens == 2 + 1 + 1 + 4


def test_responses_function_call_round_trip(client, fake):
    question = "What's the weather in Paris?"
    first = client.responses.create(model="gpt-4o", input=question, tools=RESP_TOOLS)
    [call] = first.output
    assert call.type == "function_call" and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert call.name == "get_weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"location": "Paris"}
    assert first.output_text == ""
    assert first.tools[0].name == "get_weather" and first.tools[0].type == "function"
    # the tool result goes back with the whole conversation in the input list
    second = client.responses.create(model="gpt-4o", tools=RESP_TOOLS, input=[
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'},
    ])
    assert second.output_text == ANSWER_PREFIX + question
    assert fake.requests[-1]["json"]["input"][2] == {
        "type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}
    # ...or only the tool result, chained on the stored response
    third = client.responses.create(model="gpt-4o", tools=RESP_TOOLS, previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "21C"}])
    assert third.output_text == ANSWER_PREFIX + question + " (turns: 1)"


def test_responses_tools_without_trigger_word_answer_text(client):
    resp = client.responses.create(model="gpt-4o", input="hello", tools=RESP_TOOLS)
    assert [item.type for item in resp.output] == ["message"]
    assert resp.output_text == ANSWER_PREFIX + "hello"


def test_responses_tool_output_without_its_call(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input=[
            {"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
    assert err.value.param == "input"
    assert "No tool call found for function call output with call_id call_nope" in err.value.message


def test_responses_stream_helper(client, fake):
    with client.responses.stream(model="gpt-4o", input="stream me please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    words_out = (ANSWER_PREFIX + "stream me please").split()
    assert types == (["response.created", "response.in_progress", *MESSAGE_EVENTS]
                     + ["response.output_text.delta"] * len(words_out) + MESSAGE_DONE_EVENTS
                     + ["response.completed"])
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert events[0].response.id == final.id
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas[0].delta == "Hello " and deltas[0].output_index == 0 and deltas[0].content_index == 0
    assert deltas[-1].snapshot == ANSWER_PREFIX + "stream me please"
    assert len({e.item_id for e in deltas}) == 1 and deltas[0].item_id == final.output[0].id
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == ANSWER_PREFIX + "stream me please"
    assert events[-1].response.status == "completed"
    assert final.output_text == ANSWER_PREFIX + "stream me please"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (3, 7, 10)
    assert fake.requests[-1]["json"]["stream"] is True
    assert client.responses.retrieve(final.id).output_text == final.output_text  # stored once completed


def test_responses_stream_tool_call(client):
    events = list(client.responses.create(model="gpt-4o", input="weather?", tools=RESP_TOOLS, stream=True))
    types = [e.type for e in events]
    arg_deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(arg_deltas) > 2  # arguments are split over several deltas
    assert types == (["response.created", "response.in_progress", "response.output_item.added"]
                     + ["response.function_call_arguments.delta"] * len(arg_deltas)
                     + ["response.function_call_arguments.done", "response.output_item.done",
                        "response.completed"])
    added = events[2].item
    assert added.type == "function_call" and added.status == "in_progress" and added.arguments == ""
    assert added.name == "get_weather" and added.call_id.startswith("call_")
    args = "".join(e.delta for e in arg_deltas)
    assert json.loads(args) == {"location": "Paris"}
    assert events[-3].arguments == args and all(e.item_id == added.id for e in arg_deltas)
    final = events[-1].response
    assert final.output[0].call_id == added.call_id and final.output[0].arguments == args


def test_responses_stream_wire_format(fake):
    """Raw bytes: ``event:`` + ``data:`` SSE over chunked encoding, sequence numbers, no [DONE]."""
    resp = requests.post(fake.url + "/v1/responses", headers=AUTH, timeout=5,
                         json={"model": "gpt-4o", "input": "hi", "stream": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert "[DONE]" not in resp.text
    events = sse_events(resp.text)
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [name for name, _ in events] == (["response.created", "response.in_progress", *MESSAGE_EVENTS]
                                            + ["response.output_text.delta"] * 5 + MESSAGE_DONE_EVENTS
                                            + ["response.completed"])
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert created["usage"] is None and completed["usage"]["total_tokens"] == 1 + 5
    item_id = completed["output"][0]["id"]
    assert item_id.startswith("msg_") and created["id"] == completed["id"]
    assert events[2][1]["item"] == {"id": item_id, "type": "message", "status": "in_progress",
                                    "role": "assistant", "content": []}
    assert events[3][1]["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert events[4][1]["logprobs"] == []


def test_responses_previous_response_id_chaining(client, fake):
    first = client.responses.create(model="gpt-4o", input="hi", instructions="be brief")
    second = client.responses.create(model="gpt-4o", input="and again", previous_response_id=first.id)
    assert second.output_text == ANSWER_PREFIX + "and again (turns: 2)"
    assert second.previous_response_id == first.id
    assert second.instructions is None  # instructions are not carried over
    # the earlier input and output are billed as input: "hi" + first answer + "and again"
    assert second.usage.input_tokens == 1 + 5 + 2
    third = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": "third"}],
                                    previous_response_id=second.id)
    assert third.output_text == ANSWER_PREFIX + "third (turns: 3)"
    assert fake.requests[-1]["json"]["previous_response_id"] == second.id


def test_responses_unknown_previous_response_id(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_nope")
    assert err.value.body == {"message": "Previous response with id 'resp_nope' not found.",
                              "type": "invalid_request_error", "param": "previous_response_id",
                              "code": "previous_response_not_found"}


def test_responses_store_false_is_not_kept(client, fake):
    resp = client.responses.create(model="gpt-4o", input="hi", store=False)
    assert resp.store is False and resp.id not in fake.responses
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", input="hi", previous_response_id=resp.id)


def test_responses_retrieve_and_delete(client, fake):
    resp = client.responses.create(model="gpt-4o", input="keep me", metadata={"a": "b"})
    got = client.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == resp.output_text and got.metadata == {"a": "b"}
    assert got.usage.total_tokens == resp.usage.total_tokens
    assert client.responses.delete(resp.id) is None  # the SDK returns nothing...
    assert fake.requests[-1]["method"] == "DELETE" and fake.requests[-1]["path"] == f"/v1/responses/{resp.id}"
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve(resp.id)
    assert err.value.body["message"] == f"Response with id '{resp.id}' not found."
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)
    other = client.responses.create(model="gpt-4o", input="x")  # ...the wire carries the deletion object
    raw = requests.delete(f"{fake.url}/v1/responses/{other.id}", headers=AUTH)
    assert raw.status_code == 200
    assert raw.json() == {"id": other.id, "object": "response", "deleted": True}
    fake.reset()  # reset() forgets stored responses
    assert fake.responses == {}


def test_responses_input_items(client):
    question = "weather in Paris?"
    first = client.responses.create(model="gpt-4o", input=question, tools=RESP_TOOLS)
    call = first.output[0]
    resp = client.responses.create(model="gpt-4o", input=[
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])
    page = client.responses.input_items.list(resp.id)
    assert [item.type for item in page.data] == ["function_call_output", "function_call", "message"]  # newest first
    assert all(item.id for item in page.data) and page.has_more is False
    assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    output, fc, message = page.data
    assert (output.call_id, output.output, output.status) == (call.call_id, "sunny", "completed")
    assert fc.id.startswith("fc_") and fc.name == "get_weather" and fc.arguments == call.arguments
    assert message.role == "user" and message.id.startswith("msg_")
    assert message.content[0].type == "input_text" and message.content[0].text == question
    asc = client.responses.input_items.list(resp.id, order="asc")
    assert [item.id for item in asc.data] == [item.id for item in reversed(page.data)]
    # limit + auto-pagination through "after"
    assert [item.id for item in client.responses.input_items.list(resp.id, limit=1)] == [i.id for i in page.data]
    one = client.responses.input_items.list(resp.id, limit=2)
    assert len(one.data) == 2 and one.has_more is True
    only = client.responses.input_items.list(first.id)
    assert [(i.type, i.role, i.content[0].text) for i in only.data] == [("message", "user", question)]
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_nope")


@pytest.mark.parametrize("body, param, code", [
    ({"input": "hi"}, "model", "missing_required_parameter"),
    ({"model": "gpt-4o"}, "input", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": "hi", "messages": []}, "messages", "unknown_parameter"),
    ({"model": "gpt-4o", "input": 42}, "input", "invalid_type"),
    ({"model": "gpt-4o", "input": []}, "input", "empty_array"),
    ({"model": "gpt-4o", "input": ["hi"]}, "input[0]", "invalid_type"),
    ({"model": "gpt-4o", "input": [{"type": "bogus"}]}, "input[0].type", "invalid_value"),
    ({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"model": "gpt-4o", "input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
     "input[0].content[0].type", "invalid_value"),
    ({"model": "gpt-4o", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": "hi", "tools": TOOLS}, "tools[0].name", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": "hi", "max_output_tokens": "ten"}, "max_output_tokens", "invalid_type"),
])
def test_responses_validation(fake, body, param, code):
    resp = requests.post(fake.url + "/v1/responses", headers=AUTH, json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert f"'{param}'" in error["message"] or code == "invalid_value"  # invalid_value names the value


def test_responses_validation_through_sdk(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input="hi", extra_body={"foo": 1})
    assert (err.value.param, err.value.code, err.value.body["message"]) == ("foo", "unknown_parameter",
                                                                            "Unknown parameter: 'foo'.")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input=[{"type": "bogus"}])
    assert err.value.body["message"].startswith("Invalid value: 'bogus'. Supported values are: 'message'")


@pytest.mark.parametrize("model, exc, status, code", [
    ("fail-400", openai.BadRequestError, 400, None),
    ("context-length", openai.BadRequestError, 400, "context_length_exceeded"),
    ("fail-401", openai.AuthenticationError, 401, "invalid_api_key"),
    ("fail-403", openai.PermissionDeniedError, 403, None),
    ("fail-404", openai.NotFoundError, 404, "model_not_found"),
    ("fail-429", openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("fail-500", openai.InternalServerError, 500, None),
    ("fail-503", openai.InternalServerError, 503, None),
])
def test_responses_error_triggers(client, fake, model, exc, status, code):
    with pytest.raises(exc) as err:
        client.responses.create(model=model, input="hi")
    assert err.value.status_code == status and err.value.code == code and err.value.type
    assert fake.count(model) == 1
    with pytest.raises(exc):  # streaming requests fail before the stream starts
        with client.responses.stream(model=model, input="hi") as stream:
            list(stream)


def test_responses_failure_modes_on_demand(client, fake):
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="flaky-1", input="hi")
    assert client.responses.create(model="flaky-1", input="hi").output_text == ANSWER_PREFIX + "hi"
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="ratelimit-1", input="hi")
    assert err.value.response.headers["retry-after"] == "1"
    with pytest.raises(ValueError):
        client.responses.create(model="malformed", input="hi")
    assert (fake.count("flaky-1"), fake.count("ratelimit-1")) == (2, 1)


def test_responses_stream_error(client, fake):
    got = []
    with pytest.raises(openai.APIError, match="upstream stream broke") as err:
        with client.responses.stream(model="stream-error", input="hi") as stream:
            for event in stream:
                got.append(event.type)
    assert got == ["response.created", "response.in_progress", *MESSAGE_EVENTS,
                   "response.output_text.delta", "response.output_text.delta"]
    assert err.value.code == "server_error"
    assert fake.responses == {}  # a failed stream stores nothing
    # the wire: an "error" event with the documented top-level fields (and the live API's nested object)
    raw = requests.post(fake.url + "/v1/responses", headers=AUTH,
                        json={"model": "stream-error", "input": "hi", "stream": True})
    name, data = sse_events(raw.text)[-1]
    assert name == "error"
    assert {k: data[k] for k in ("type", "code", "message", "param", "sequence_number")} == {
        "type": "error", "code": "server_error", "message": "upstream stream broke", "param": None,
        "sequence_number": 6}
    assert data["error"]["message"] == "upstream stream broke"


def test_responses_cut_stream(client):
    with client.responses.stream(model="cut-stream", input="hi") as stream:
        types = [event.type for event in stream]
        assert types[-2:] == ["response.output_text.delta", "response.output_text.delta"]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()


def test_responses_max_output_tokens_incomplete(client):
    resp = client.responses.create(model="gpt-4o", input="a b c d", max_output_tokens=2)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == "Hello from" and resp.output[0].status == "incomplete"
    assert resp.usage.output_tokens == 2
    events = list(client.responses.create(model="gpt-4o", input="a b c d", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Hello ", "from"]


def test_responses_disconnect_mid_stream(fake):
    resp = requests.post(fake.url + "/v1/responses", headers=AUTH, stream=True, timeout=5,
                         json={"model": "slow-stream", "input": "hi", "stream": True})
    got = []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            got.append(json.loads(line[len(b"data: "):]))
        if len(got) == 5:
            break
    resp.close()
    assert [e["type"] for e in got][-1] == "response.output_text.delta" and got[-1]["delta"] == "tick0 "
    assert fake.wait_for_disconnect(5)
    [gone] = fake.disconnects
    assert gone["path"] == "/v1/responses" and gone["model"] == "slow-stream"
    assert 5 <= gone["chunks_sent"] < fake.slow_stream_chunks


def test_responses_azure(azure, fake):
    resp = azure.responses.create(model="my-deploy", input="hi azure")
    assert resp.output_text == ANSWER_PREFIX + "hi azure" and resp.model == "my-deploy"
    req = fake.requests[-1]
    assert req["path"] == "/openai/responses"
    assert req["query"] == {"api-version": API_VERSION}
    assert req["headers"]["api-key"] == AZURE_KEY
    chained = azure.responses.create(model="my-deploy", input="more", previous_response_id=resp.id)
    assert chained.output_text == ANSWER_PREFIX + "more (turns: 2)"
    assert azure.responses.retrieve(resp.id).id == resp.id
    assert fake.requests[-1]["path"] == f"/openai/responses/{resp.id}"
    assert [i.type for i in azure.responses.input_items.list(chained.id)] == ["message"]
    azure.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        azure.responses.retrieve(resp.id)
    with pytest.raises(openai.RateLimitError):  # the body's model (the deployment) triggers
        azure.responses.create(model="fail-429", input="hi")
    with azure.responses.stream(model="dep", input="x") as stream:
        assert stream.get_final_response().output_text == ANSWER_PREFIX + "x"


def test_responses_azure_auth_and_api_version(fake):
    wrong = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="nope", api_version=API_VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.responses.create(model="dep", input="hi")
    assert err.value.body["code"] == "401"
    resp = requests.post(fake.url + "/openai/responses", headers={"api-key": AZURE_KEY},
                         json={"model": "dep", "input": "hi"})
    assert resp.status_code == 404 and resp.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_responses_auth_and_unknown_routes(fake):
    assert requests.post(fake.url + "/v1/responses", json={"model": "gpt-4o", "input": "hi"}).status_code == 401
    assert requests.get(fake.url + "/v1/responses/resp_x").status_code == 401
    resp = requests.put(fake.url + "/v1/responses/resp_x", headers=AUTH, json={})
    assert resp.status_code == 404 and resp.json()["error"]["message"] == "Invalid URL (PUT /v1/responses/resp_x)"
    resp = requests.post(fake.url + "/v1/responses", headers={**AUTH, "Content-Type": "application/json"},
                         data=b"{nope")
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("We could not parse the JSON body")


# ---- images ---------------------------------------------------------------

def test_images_url_default_model(client, fake):
    resp = client.images.generate(prompt="a red fox in the snow", n=2)
    assert abs(resp.created - time.time()) < 60
    assert len(resp.data) == 2 and len({d.url for d in resp.data}) == 2
    for image in resp.data:
        assert image.url.startswith("https://fake-images.example/") and image.url.endswith(".png")
        assert image.b64_json is None and image.revised_prompt is None  # only dall-e-3 revises prompts
    assert resp.usage is None
    [req] = fake.requests
    assert req["path"] == "/v1/images/generations"
    assert req["json"] == {"prompt": "a red fox in the snow", "n": 2}
    assert fake.count("dall-e-2") == 1  # the API's default model


def test_images_b64_json_is_a_png(client):
    resp = client.images.generate(model="dall-e-2", prompt="a dot", size="256x256", response_format="b64_json")
    [image] = resp.data
    assert image.url is None
    png = base64.b64decode(image.b64_json)
    assert png == FAKE_PNG and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR" and struct.unpack(">II", png[16:24]) == (1, 1)


@pytest.mark.parametrize("size", ["1024x1024", "1792x1024", "1024x1792"])
def test_images_dalle3_sizes(client, fake, size):
    resp = client.images.generate(model="dall-e-3", prompt="a lighthouse", size=size, quality="hd",
                                  style="natural", user="u-1")
    [image] = resp.data
    assert image.url.startswith("https://fake-images.example/")
    assert image.revised_prompt == "a lighthouse"
    assert fake.requests[-1]["json"]["size"] == size


def test_images_dalle3_rejects_other_sizes_and_n(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="dall-e-3", prompt="x", size="512x512")
    assert (err.value.param, err.value.code) == ("size", "invalid_value")
    assert "Supported values are: '1024x1024', '1792x1024', and '1024x1792'" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="dall-e-3", prompt="x", n=2)
    assert err.value.param == "n"


def test_images_gpt_image_1_usage(client):
    resp = client.images.generate(model="gpt-image-1", prompt="a cat wearing a hat", quality="high",
                                  size="1536x1024", n=2)
    assert len(resp.data) == 2 and all(base64.b64decode(d.b64_json) == FAKE_PNG for d in resp.data)
    assert all(d.url is None and d.revised_prompt is None for d in resp.data)
    assert (resp.size, resp.quality, resp.output_format, resp.background) == ("1536x1024", "high", "png", "opaque")
    usage = resp.usage
    assert usage.input_tokens == 5
    assert usage.output_tokens == 2 * 6208 == 2 * GPT_IMAGE_OUTPUT_TOKENS["high"]["1536x1024"]
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert (usage.input_tokens_details.text_tokens, usage.input_tokens_details.image_tokens) == (5, 0)
    auto = client.images.generate(model="gpt-image-1", prompt="x")  # auto size and quality
    assert (auto.size, auto.quality, auto.usage.output_tokens) == ("1024x1024", "medium", 1056)
    with pytest.raises(openai.BadRequestError) as err:  # GPT image models always answer base64
        client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    assert (err.value.param, err.value.code) == ("response_format", "unknown_parameter")
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="gpt-image-1", prompt="x", size="1792x1024")
    assert err.value.param == "size"


@pytest.mark.parametrize("body, param, code", [
    ({"model": "dall-e-2"}, "prompt", "missing_required_parameter"),
    ({"prompt": "x", "n": 0}, "n", "integer_below_min_value"),
    ({"prompt": "x", "n": 11}, "n", "integer_above_max_value"),
    ({"prompt": "x", "n": "2"}, "n", "invalid_type"),
    ({"prompt": "x", "size": "1792x1024"}, "size", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "size": "256x256"}, "size", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", "string_above_max_length"),
    ({"model": "dall-e-2", "prompt": "x", "response_format": "png"}, "response_format", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "quality": "ultra"}, "quality", "invalid_value"),
])
def test_images_validation(fake, body, param, code):
    resp = requests.post(fake.url + "/v1/images/generations", headers=AUTH, json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_images_error_triggers(client, fake):
    with pytest.raises(openai.RateLimitError) as err:
        client.images.generate(model="fail-429", prompt="x")
    assert err.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="flaky-1", prompt="x")
    assert client.images.generate(model="flaky-1", prompt="x").data
    assert (fake.count("fail-429"), fake.count("flaky-1")) == (1, 2)


# ---- moderations ----------------------------------------------------------

def test_moderations_flags_kill(client, fake):
    resp = client.moderations.create(input="I will kill the lights")
    assert resp.id.startswith("modr-") and resp.model == "omni-moderation-latest"
    assert fake.requests[-1]["json"] == {"input": "I will kill the lights"}  # the API's default model
    [result] = resp.results
    assert result.flagged is True
    categories = result.categories.model_dump(by_alias=True)
    assert set(categories) == set(MODERATION_CATEGORIES)
    assert [c for c, hit in categories.items() if hit] == ["violence"]
    assert result.categories.violence is True and result.categories.self_harm is False
    scores = result.category_scores.model_dump(by_alias=True)
    assert set(scores) == set(MODERATION_CATEGORIES)
    assert result.category_scores.violence == FLAGGED_SCORE
    assert all(0 <= v < 0.001 for c, v in scores.items() if c != "violence")
    applied = result.category_applied_input_types.model_dump(by_alias=True)
    assert set(applied) == set(MODERATION_CATEGORIES) and all(v == ["text"] for v in applied.values())


def test_moderations_list_one_result_each_and_deterministic(client):
    resp = client.moderations.create(model="omni-moderation-latest",
                                     input=["hello there", "Kill it!", "skills and killers"])
    assert [r.flagged for r in resp.results] == [False, True, False]  # the word, not a substring
    again = client.moderations.create(model="omni-moderation-latest", input=["hello there"])
    assert again.results[0].category_scores == resp.results[0].category_scores


def test_moderations_multimodal_parts_and_legacy_model(client, fake):
    resp = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "they want to kill"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    [result] = resp.results  # the parts are one input
    assert result.flagged and result.categories.violence
    assert result.category_applied_input_types.violence == ["text", "image"]
    assert result.category_applied_input_types.harassment == ["text"]  # text-only category
    legacy = requests.post(fake.url + "/v1/moderations", headers=AUTH,
                           json={"model": "text-moderation-latest", "input": "fine"}).json()
    assert legacy["model"] == "text-moderation-latest"
    assert "category_applied_input_types" not in legacy["results"][0]
    with pytest.raises(openai.BadRequestError) as err:
        client.moderations.create(input=[])
    assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError) as err:
        client.moderations.create(input=[{"type": "video", "video": "x"}])
    assert err.value.param == "input[0].type"
    resp = requests.post(fake.url + "/v1/moderations", headers=AUTH, json={"model": "omni-moderation-latest"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "input"
    with pytest.raises(openai.InternalServerError):
        client.moderations.create(model="fail-500", input="x")


# ---- audio: transcriptions and translations -------------------------------

def make_wav(path, seconds, rate=16000, channels=1, width=2):
    """Write a silent WAV with the stdlib ``wave`` module."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * (int(seconds * rate) * channels * width))
    return path


def test_transcription_json(client, fake, tmp_path):
    path = make_wav(tmp_path / "speech.wav", 2.5)
    with open(path, "rb") as f:
        resp = client.audio.transcriptions.create(file=f, model="whisper-1")
    assert resp.text == "Fake transcript of 2.50 seconds"
    assert resp.usage.type == "duration" and resp.usage.seconds == 3
    [req] = fake.requests
    assert req["path"] == "/v1/audio/transcriptions" and req["json"] is None
    assert req["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert req["form"] == {"model": "whisper-1"}
    assert req["files"] == {"file": {"filename": "speech.wav", "content_type": req["files"]["file"]["content_type"],
                                     "size": path.stat().st_size}}
    assert fake.count("whisper-1") == 1


def test_transcription_verbose_json(client, fake, tmp_path):
    path = make_wav(tmp_path / "long.wav", 1.23456, rate=8000, channels=2, width=1)  # 9876 frames: 1.2345 s
    with open(path, "rb") as f:
        resp = client.audio.transcriptions.create(
            file=f, model="whisper-1", response_format="verbose_json", language="fr", prompt="names: Zoë",
            temperature=0.2, timestamp_granularities=["word", "segment"])
    assert resp.task == "transcribe" and resp.language == "french"
    assert resp.duration == pytest.approx(1.2345)
    assert resp.text == "Fake transcript of 1.23 seconds"
    [segment] = resp.segments
    assert (segment.id, segment.start, segment.end, segment.text) == (0, 0.0, resp.duration, resp.text)
    assert segment.temperature == 0.2 and len(segment.tokens) == 5
    assert [w.word for w in resp.words] == resp.text.split() and resp.words[-1].end == pytest.approx(1.2345, abs=1e-3)
    assert resp.usage.seconds == 2  # billed per started second
    form = fake.requests[-1]["form"]
    assert form == {"model": "whisper-1", "response_format": "verbose_json", "language": "fr",
                    "prompt": "names: Zoë", "temperature": "0.2", "timestamp_granularities[]": ["word", "segment"]}
    with open(path, "rb") as f:  # without granularities: segments only
        plain = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="verbose_json")
    assert plain.language == "english" and len(plain.segments) == 1 and plain.words is None


def test_transcription_text_srt_vtt(client, tmp_path):
    path = make_wav(tmp_path / "a.wav", 2.5)
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="text")
    assert text == "Fake transcript of 2.50 seconds\n"
    with open(path, "rb") as f:
        srt = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="srt")
    assert srt == "1\n00:00:00,000 --> 00:00:02,500\nFake transcript of 2.50 seconds\n\n"
    with open(path, "rb") as f:
        vtt = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="vtt")
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nFake transcript of 2.50 seconds\n\n"
    with open(path, "rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(file=f, model="whisper-1", response_format="text")
    assert raw.headers["content-type"].startswith("text/plain")


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK: translations
def test_translation(client, fake, tmp_path):
    path = make_wav(tmp_path / "fr.wav", 4)
    with open(path, "rb") as f:
        resp = client.audio.translations.create(file=f, model="whisper-1")
    assert resp.text == "Fake translation of 4.00 seconds"
    assert fake.requests[-1]["path"] == "/v1/audio/translations"
    raw = requests.post(fake.url + "/v1/audio/translations", headers=AUTH,
                        files={"file": ("fr.wav", path.read_bytes())}, data={"model": "whisper-1"}).json()
    assert raw == {"text": "Fake translation of 4.00 seconds", "usage": {"type": "duration", "seconds": 4}}
    with open(path, "rb") as f:
        verbose = client.audio.translations.create(file=f, model="whisper-1", response_format="verbose_json")
    assert (verbose.language, verbose.duration, verbose.text) == ("english", 4.0, "Fake translation of 4.00 seconds")
    assert fake.requests[-1]["json"] is None and fake.requests[-1]["form"]["response_format"] == "verbose_json"
    assert requests.post(fake.url + "/v1/audio/translations", headers=AUTH,
                         files={"file": ("fr.wav", path.read_bytes())},
                         data={"model": "whisper-1", "response_format": "verbose_json"}).json()["task"] == "translate"


def test_transcription_invalid_file(client, fake):
    for data in (b"ID3 this is no wav", b"RIFF\x00\x00\x00\x00WAVE", b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00"):
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.transcriptions.create(file=("clip.mp3", data, "audio/mpeg"), model="whisper-1")
        assert err.value.body == {
            "message": "Invalid file format. Supported formats: "
                       "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            "type": "invalid_request_error", "param": "file", "code": None}
    assert fake.requests[-1]["files"]["file"] == {"filename": "clip.mp3", "content_type": "audio/mpeg",
                                                   "size": len(data)}


def test_transcription_request_errors(fake):
    url = fake.url + "/v1/audio/transcriptions"
    wav = {"file": ("a.wav", wav_bytes(1), "audio/wav")}
    resp = requests.post(url, headers=AUTH, json={"model": "whisper-1"})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("Invalid Content-Type header (application/json), expected "
                                                      "multipart/form-data")
    resp = requests.post(url, headers=AUTH, files=wav)
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "you must provide a model parameter"
    resp = requests.post(url, headers=AUTH, files={"x": ("a.txt", b"x")}, data={"model": "whisper-1"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "file"
    resp = requests.post(url, headers=AUTH, files=wav, data={"model": "whisper-1", "response_format": "xml"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "response_format"
    resp = requests.post(url, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"}, data=b"junk")
    assert resp.status_code == 400 and fake.requests[-1]["form"] is None
    resp = requests.post(url, files=wav, data={"model": "whisper-1"})
    assert resp.status_code == 401


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK: translations
def test_transcription_error_triggers(client, fake, tmp_path):
    path = make_wav(tmp_path / "a.wav", 1)
    with open(path, "rb") as f:
        with pytest.raises(openai.InternalServerError):
            client.audio.transcriptions.create(file=f, model="fail-500")
    with open(path, "rb") as f:
        with pytest.raises(openai.RateLimitError):
            client.audio.translations.create(file=f, model="ratelimit-1")
    with open(path, "rb") as f:
        assert client.audio.translations.create(file=f, model="ratelimit-1").text
    assert (fake.count("fail-500"), fake.count("ratelimit-1")) == (1, 2)


def test_wav_duration_and_multipart_parser():
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(44100)
        w.writeframes(b"\x01" * (44100 * 2 * 3 // 2))
    assert wav_duration(buf.getvalue()) == 0.5
    # a LIST chunk (odd size, padded) before "data" and a data size larger than the bytes present
    data = wav_bytes(1, rate=8000)
    fmt, pcm = data[12:36], data[44:]
    odd = (b"RIFF" + struct.pack("<I", 0) + b"WAVE" + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
           + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm)
    assert wav_duration(odd) == 1.0
    assert wav_duration(b"RIFF....WAVEdata\x00\x00\x00\x00") is None  # data before fmt
    assert wav_duration(b"OggS" + bytes(40)) is None
    body = (b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"g[]\"\r\n\r\nword\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n\r\n-RIFF\r\n\r\n\r\n--b--\r\n")
    fields, files = parse_multipart(body, "multipart/form-data; boundary=b")
    assert fields == {"model": "whisper-1", "g[]": ["word"]}
    assert files == {"file": {"filename": "a.wav", "content_type": "audio/wav", "data": b"\r\n-RIFF\r\n\r\n"}}
    with pytest.raises(ValueError):
        parse_multipart(body[:-7], "multipart/form-data; boundary=b")


# ---- audio: speech --------------------------------------------------------

def test_speech_mp3(client, fake):
    text = "x" * 100
    resp = client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert resp.content == fake_speech(text, "alloy", "mp3")
    assert len(resp.content) == 64 * 1024 == speech_size(text)
    assert resp.content.startswith(b"ID3")
    assert resp.response.headers["content-type"] == "audio/mpeg"
    assert resp.response.headers["transfer-encoding"] == "chunked" and "content-length" not in resp.response.headers
    req = fake.requests[-1]
    assert req["json"] == {"model": "tts-1", "voice": "alloy", "input": text}
    assert req["headers"]["accept"] == "application/octet-stream"
    assert req["audio"] == {"bytes_total": 65536, "bytes_sent": 65536, "chunks_sent": 8, "completed": True}
    assert fake.disconnects == []
    short = client.audio.speech.create(model="tts-1", voice={"id": "voice_123"}, input="hi", speed=1.5)
    assert len(short.content) == 16 * 1024  # at least 16 KiB
    assert fake_speech("hi", "alloy") != fake_speech("hi", "nova") != fake_speech("ho", "nova")


def test_speech_streaming_response_wav(client, fake):
    text = "Hello there, this is a sentence of some length for the speech endpoint." * 3
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="coral", input=text,
                                                            response_format="wav") as resp:
        assert resp.headers["content-type"] == "audio/wav"
        pieces = list(resp.iter_bytes())
    audio = b"".join(pieces)
    assert len(audio) == speech_size(text) == len(text) * 65536 // 100 // 2 * 2
    with wave.open(io.BytesIO(audio)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        frames = w.readframes(w.getnframes())
    assert len(frames) == len(audio) - 44 and frames == bytes(len(frames))  # silence
    assert wav_duration(audio) == pytest.approx((len(audio) - 44) / 48000)
    assert fake.requests[-1]["audio"]["completed"] is True


@pytest.mark.parametrize("fmt, content_type, magic", [
    ("opus", "audio/opus", b"OggS"), ("aac", "audio/aac", b"\xff\xf1"), ("flac", "audio/flac", b"fLaC"),
    ("pcm", "audio/pcm", b""),
])
def test_speech_formats(client, fmt, content_type, magic):
    resp = client.audio.speech.create(model="tts-1", voice="echo", input="abc", response_format=fmt)
    assert resp.response.headers["content-type"] == content_type
    assert resp.content.startswith(magic) and resp.content == fake_speech("abc", "echo", fmt)


def test_speech_wire_chunks(fake):
    """Raw socket: the body is chunked in 8 KiB pieces (last one shorter)."""
    text = "y" * 150  # 98304 bytes: 12 chunks of 8 KiB
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": text}).encode()
    sock = socket.create_connection((fake.host, fake.port), timeout=5)
    sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: audio/mpeg" in head
    sizes, audio = [], b""
    while True:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            break
        sizes.append(size)
        audio, rest = audio + rest[:size], rest[size + 2:]
    assert sizes == [8192] * 12
    assert audio == fake_speech(text)


@pytest.mark.parametrize("body, param, code", [
    ({"model": "tts-1", "voice": "alloy"}, "input", "missing_required_parameter"),
    ({"model": "tts-1", "input": "hi"}, "voice", "missing_required_parameter"),
    ({"model": "tts-1", "voice": "robot", "input": "hi"}, "voice", "invalid_value"),
    ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"}, "response_format", "invalid_value"),
    ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 5}, "speed", "decimal_above_max_value"),
    ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 0.1}, "speed", "decimal_below_min_value"),
    ({"model": "tts-1", "voice": "alloy", "input": 42}, "input", "invalid_type"),
])
def test_speech_validation(fake, body, param, code):
    resp = requests.post(fake.url + "/v1/audio/speech", headers=AUTH, json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_speech_input_too_long_and_triggers(client, fake):
    assert client.audio.speech.create(model="tts-1", voice="alloy", input="z" * 4096).content
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="z" * 4097)
    assert (err.value.param, err.value.code) == ("input", "string_above_max_length")
    assert "maximum length 4096, but got a string with length 4097" in err.value.message
    with pytest.raises(openai.RateLimitError):
        client.audio.speech.create(model="fail-429", voice="alloy", input="hi")
    with pytest.raises(openai.AuthenticationError):
        client.audio.speech.create(model="fail-401", voice="alloy", input="hi")


def test_speech_client_hang_up_is_recorded(client, fake):
    fake.speech_chunk_interval = 0.05
    try:
        text = "w" * 200  # 128 KiB: 16 chunks, 0.75 s at this pace
        with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text) as resp:
            first = next(resp.iter_bytes(8192))
        assert first == fake_speech(text)[:8192]
        assert fake.wait_for_disconnect(3)
        [gone] = fake.disconnects
        assert gone["path"] == "/v1/audio/speech" and gone["model"] == "tts-1"
        assert gone["bytes_total"] == 128 * 1024 and 8192 <= gone["bytes_sent"] < gone["bytes_total"]
        assert gone["chunks_sent"] == gone["bytes_sent"] // 8192
        audio = fake.requests[-1]["audio"]
        assert audio["completed"] is False and audio["bytes_sent"] == gone["bytes_sent"]
    finally:
        fake.speech_chunk_interval = 0.0


def test_speech_slow_stall_and_cut_stream(client, fake):
    fake.stall_seconds = 0.4
    try:
        started = time.monotonic()
        text = "s" * 50  # 32 KiB: the stall comes after two of its four chunks
        assert client.audio.speech.create(model="stall-stream", voice="alloy", input=text).content == fake_speech(text)
        assert time.monotonic() - started >= 0.4
    finally:
        fake.stall_seconds = 10.0
    cut = client.audio.speech.create(model="cut-stream", voice="alloy", input="c" * 100)
    assert cut.content == fake_speech("c" * 100)[:2 * 8192]
    assert fake.requests[-1]["audio"]["completed"] is False
    with client.audio.speech.with_streaming_response.create(model="slow-stream", voice="alloy", input="q") as resp:
        assert len(next(resp.iter_bytes(8192))) == 8192
    assert fake.wait_for_disconnect(3)
    assert fake.disconnects[0]["model"] == "slow-stream"


# ---- Azure: images and audio ----------------------------------------------

def test_azure_images(azure, fake):
    resp = azure.images.generate(model="my-dalle", prompt="a boat", size="1792x1024")  # Azure: dall-e-3 sizes
    assert resp.data[0].url.startswith("https://fake-images.example/") and resp.data[0].revised_prompt == "a boat"
    req = fake.requests[-1]
    assert req["path"] == "/openai/deployments/my-dalle/images/generations"
    assert req["query"] == {"api-version": API_VERSION} and req["headers"]["api-key"] == AZURE_KEY
    image = azure.images.generate(model="gpt-image-1", prompt="a boat", quality="low")
    assert image.usage.output_tokens == 272
    with pytest.raises(openai.BadRequestError):
        azure.images.generate(model="my-dalle", prompt="a boat", size="256x256")
    with pytest.raises(openai.RateLimitError):
        azure.images.generate(model="fail-429", prompt="x")
    wrong = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="nope", api_version=API_VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.images.generate(model="my-dalle", prompt="x")
    assert err.value.body["code"] == "401"
    resp = requests.post(fake.url + "/openai/deployments/d/images/generations", headers={"api-key": AZURE_KEY},
                         json={"prompt": "x"})
    assert resp.status_code == 404 and resp.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK: translations
def test_azure_audio(azure, fake, tmp_path):
    path = make_wav(tmp_path / "a.wav", 1.5)
    with open(path, "rb") as f:
        resp = azure.audio.transcriptions.create(file=f, model="my-whisper", response_format="verbose_json")
    assert resp.text == "Fake transcript of 1.50 seconds" and resp.duration == 1.5 and resp.usage.seconds == 2
    req = fake.requests[-1]
    assert req["path"] == "/openai/deployments/my-whisper/audio/transcriptions"
    assert req["query"] == {"api-version": API_VERSION} and req["headers"]["api-key"] == AZURE_KEY
    assert req["files"]["file"]["size"] == path.stat().st_size
    with open(path, "rb") as f:
        assert azure.audio.translations.create(file=f, model="my-whisper").text == "Fake translation of 1.50 seconds"
    assert fake.requests[-1]["path"] == "/openai/deployments/my-whisper/audio/translations"
    speech = azure.audio.speech.create(model="my-tts", voice="nova", input="hello azure", response_format="flac")
    assert speech.content == fake_speech("hello azure", "nova", "flac")
    assert fake.requests[-1]["path"] == "/openai/deployments/my-tts/audio/speech"
    with pytest.raises(openai.InternalServerError):
        azure.audio.speech.create(model="fail-503", voice="nova", input="x")
    assert fake.count("my-whisper") == 2 and fake.count("my-tts") == 1
