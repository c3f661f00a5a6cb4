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
