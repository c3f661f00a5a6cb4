"""Check the fake Gemini upstream with the official ``google-genai`` SDK.

If the SDK parses the fake's answers, streams and errors, the fake is faithful enough for the
gateway's Gemini tests to rely on it.
"""

import base64
import json

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.fakes.gemini_server import ANSWER_PREFIX
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.gemini_server import fake_embedding

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters=types.Schema(type="OBJECT", properties={"location": types.Schema(type="STRING")},
                            required=["location"]))
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture(scope="module")
def fake():
    with FakeGemini() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def client(fake):
    return genai.Client(api_key=fake.api_key, http_options={"base_url": fake.url, "api_version": "v1beta"})


def test_generate_content(client, fake):
    resp = client.models.generate_content(
        model="gemini-2.0-flash", contents="hi there",
        config=types.GenerateContentConfig(system_instruction="be brief", temperature=0.2))
    assert resp.text == ANSWER_PREFIX + "hi there"
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    assert resp.candidates[0].content.role == "model"
    usage = resp.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (4, 6, 10)
    assert resp.model_version == "gemini-2.0-flash"
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == fake.api_key and "key" not in sent["query"]
    assert sent["json"]["generationConfig"]["temperature"] == 0.2


def test_candidates_max_tokens_stop_and_json(client):
    resp = client.models.generate_content(model="gemini-2.0-flash", contents="a b c d",
                                          config=types.GenerateContentConfig(candidate_count=2,
                                                                             max_output_tokens=3))
    assert [c.index for c in resp.candidates] == [0, 1]
    assert all(c.finish_reason == types.FinishReason.MAX_TOKENS for c in resp.candidates)
    assert resp.candidates[1].content.parts[0].text == "Hello from fake"
    cut = client.models.generate_content(model="gemini-2.0-flash", contents="one two STOP three",
                                         config=types.GenerateContentConfig(stop_sequences=["STOP"]))
    assert cut.text == ANSWER_PREFIX + "one two "
    as_json = client.models.generate_content(model="gemini-2.0-flash", contents="x",
                                             config=types.GenerateContentConfig(
                                                 response_mime_type="application/json"))
    assert json.loads(as_json.text) == {"answer": ANSWER_PREFIX + "x"}


def test_stream(client, fake):
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="stream me please"))
    assert len(chunks) > 3
    assert "".join(c.text for c in chunks) == ANSWER_PREFIX + "stream me please"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count == 7
    assert fake.requests[-1]["query"] == {"alt": "sse"}


def test_stream_wire_format(fake):
    resp = requests.post(fake.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                         headers={"x-goog-api-key": fake.api_key},
                         json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    raw = resp.content.decode()
    events = [e for e in raw.split("\r\n\r\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert "[DONE]" not in raw  # Gemini has no end marker
    assert json.loads(events[-1][6:])["candidates"][0]["finishReason"] == "STOP"
    array = requests.post(fake.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                          headers={"x-goog-api-key": fake.api_key},
                          json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).json()
    assert isinstance(array, list) and array[-1]["candidates"][0]["finishReason"] == "STOP"


def test_function_calls_parallel_and_response(client):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])],
                                         automatic_function_calling=NO_AFC)
    question = types.Content(role="user", parts=[types.Part(text="weather in Paris and Tokyo?")])
    resp = client.models.generate_content(model="gemini-2.0-flash", contents=[question], config=config)
    calls = resp.function_calls
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"location": "Paris"}),
                                                ("get_weather", {"location": "Tokyo"})]
    answers = types.Content(role="user", parts=[
        types.Part.from_function_response(name="get_weather", response={"temp": 21}),
        types.Part.from_function_response(name="get_weather", response={"temp": 25})])
    follow = client.models.generate_content(
        model="gemini-2.0-flash", contents=[question, resp.candidates[0].content, answers], config=config)
    assert follow.text == 'Tool get_weather said: {"temp": 21} Tool get_weather said: {"temp": 25}'


def test_function_call_mode_any_and_none(client):
    tools = [types.Tool(function_declarations=[WEATHER])]
    def config(mode, names=None):
        return types.GenerateContentConfig(tools=tools, automatic_function_calling=NO_AFC, tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=mode, allowed_function_names=names)))

    forced = client.models.generate_content(model="gemini-2.0-flash", contents="hello",
                                            config=config("ANY", ["get_weather"]))
    assert forced.function_calls[0].name == "get_weather"
    off = client.models.generate_content(model="gemini-2.0-flash", contents="weather?", config=config("NONE"))
    assert off.function_calls is None and off.text.startswith(ANSWER_PREFIX)


def test_stream_function_call(client):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])],
                                         automatic_function_calling=NO_AFC)
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="weather?",
                                                        config=config))
    assert len(chunks) == 1
    assert chunks[0].function_calls[0].args == {"location": "Paris"}


def test_inline_image(client, fake):
    resp = client.models.generate_content(model="gemini-2.0-flash", contents=[
        types.Part.from_bytes(data=PNG, mime_type="image/png"), "what is this?"])
    assert resp.text == ANSWER_PREFIX + "what is this? [images: image/png]"
    part = fake.requests[-1]["json"]["contents"][0]["parts"][0]
    assert base64.b64decode(part["inlineData"]["data"]) == PNG


def test_embed_content(client, fake):
    resp = client.models.embed_content(model="text-embedding-004", contents=["alpha", "beta"],
                                       config=types.EmbedContentConfig(output_dimensionality=8))
    assert [e.values for e in resp.embeddings] == [fake_embedding("alpha", 8), fake_embedding("beta", 8)]
    assert fake.requests[-1]["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    single = requests.post(fake.url + "/v1beta/models/text-embedding-004:embedContent",
                           headers={"x-goog-api-key": fake.api_key},
                           json={"content": {"parts": [{"text": "alpha"}]}}).json()
    assert len(single["embedding"]["values"]) == 768


@pytest.mark.parametrize("model, exc, code, status", [
    ("fail-400", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("context-length", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("fail-403", genai_errors.ClientError, 403, "PERMISSION_DENIED"),
    ("fail-404", genai_errors.ClientError, 404, "NOT_FOUND"),
    ("fail-429", genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
    ("fail-500", genai_errors.ServerError, 500, "INTERNAL"),
    ("fail-503", genai_errors.ServerError, 503, "UNAVAILABLE"),
])
def test_typed_errors(client, model, exc, code, status):
    with pytest.raises(exc) as info:
        client.models.generate_content(model=model, contents="hi")
    assert (info.value.code, info.value.status) == (code, status)
    assert info.value.message


def test_retry_info_on_429(client):
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="fail-429", contents="hi")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in \
        info.value.details["error"]["details"]


def test_wrong_and_missing_key(fake):
    bad = genai.Client(api_key="AIzaSyWRONG", http_options={"base_url": fake.url})
    with pytest.raises(genai_errors.ClientError) as info:
        bad.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert info.value.code == 400 and "API key not valid" in info.value.message
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    resp = requests.post(fake.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                         json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert resp.status_code == 403 and resp.json()["error"]["status"] == "PERMISSION_DENIED"


def test_prompt_blocked_and_safety_finish(client):
    blocked = client.models.generate_content(model="blocked", contents="hi")
    assert blocked.candidates is None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    safety = client.models.generate_content(model="safety", contents="hi")
    assert safety.candidates[0].finish_reason == types.FinishReason.SAFETY


def test_stream_error_event(client):
    got = []
    with pytest.raises(genai_errors.APIError) as info:
        for chunk in client.models.generate_content_stream(model="stream-error", contents="a b c d"):
            got.append(chunk.text)
    assert got == ["Hello ", "from "]
    assert info.value.code == 500


@pytest.mark.parametrize("contents, fragment", [
    ([{"role": "user", "parts": [{"text": ""}]}], "empty text parameter"),
    ([{"role": "assistant", "parts": [{"text": "x"}]}], "valid role"),
    ([{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}],
     "immediately after a function call turn"),
    ([{"role": "user", "parts": [{"text": "q"}]},
      {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}},
                                  {"functionCall": {"name": "f", "args": {}}}]},
      {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}], "number of function response"),
    ([{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}]}], "Base64 decoding"),
])
def test_request_validation(fake, contents, fragment):
    resp = requests.post(fake.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                         headers={"x-goog-api-key": fake.api_key}, json={"contents": contents})
    assert resp.status_code == 400 and fragment in resp.json()["error"]["message"]


def test_schema_validation(fake):
    decl = {"name": "f", "parameters": {"type": "object", "additionalProperties": False,
                                        "properties": {"a": {"type": "string"}}}}
    resp = requests.post(fake.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                         headers={"x-goog-api-key": fake.api_key},
                         json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                               "tools": [{"functionDeclarations": [decl]}]})
    assert resp.status_code == 400 and 'Unknown name "additionalProperties"' in resp.json()["error"]["message"]
