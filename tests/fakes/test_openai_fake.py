"""Check the fake OpenAI / Azure upstream with the official ``openai`` SDK.

If the SDK parses the fake's answers (and raises the right typed errors), the
fake is faithful enough for the gateway's tests to rely on it.
"""
import base64
import http.client
import json
import socket
import struct
import time

import openai
import pytest
import requests

from .openai_server import ANSWER_PREFIX, FakeOpenAI, fake_embedding, mask_key

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
