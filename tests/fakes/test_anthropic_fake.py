"""Check the fake Anthropic upstream with the official ``anthropic`` SDK.

If the SDK parses the fake's messages and streams and raises its typed errors, the fake is faithful
enough for the gateway's tests to rely on it.
"""

import anthropic
import pytest
import requests

from tests.fakes.anthropic_server import ANSWER_PREFIX
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import signature

KEY = "sk-ant-fake-0123456789"
MODEL = "claude-3-5-sonnet-20240620"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}]
THINKING = {"type": "enabled", "budget_tokens": 1024}
EPHEMERAL = {"type": "ephemeral"}
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg=="
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def fake():
    with FakeAnthropic(api_key=KEY, auth_token="tok-fake") as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


@pytest.fixture(scope="module")
def client(fake):
    return anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0, timeout=5)


def user(text):
    return [{"role": "user", "content": text}]


def test_message(client, fake):
    msg = client.messages.create(model=MODEL, max_tokens=100, system="be brief", messages=user("hi there"))
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == ANSWER_PREFIX + "hi there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 6)
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"  # how this SDK sends an api key
    assert sent["headers"]["anthropic-version"]


def test_classic_x_api_key_header(fake):
    resp = requests.post(fake.url + "/v1/messages",
                         headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                         json={"model": MODEL, "max_tokens": 5, "messages": user("hi")}, timeout=5)
    assert resp.status_code == 200 and resp.headers["request-id"].startswith("req_")
    assert resp.json()["content"][0]["text"] == ANSWER_PREFIX + "hi"


def test_bearer_auth_token(fake):
    client = anthropic.Anthropic(base_url=fake.url, auth_token="tok-fake", max_retries=0, timeout=5)
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=user("x"))
    assert msg.content[0].text == ANSWER_PREFIX + "x"


def test_stop_sequence_and_max_tokens(client):
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=user("one two three"),
                                 stop_sequences=["three"])
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "three")
    assert msg.content[0].text == ANSWER_PREFIX + "one two "
    msg = client.messages.create(model=MODEL, max_tokens=3, messages=user("one two three"))
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "Hello from fake"


def test_stream_helper(client):
    with client.messages.stream(model=MODEL, max_tokens=100, messages=user("stream me please")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER_PREFIX + "stream me please"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7 and final.usage.input_tokens == 3


def test_raw_stream_events(client):
    events = list(client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"), stream=True))
    types = [e.type for e in events]  # the SDK skips ping events itself
    assert types == ["message_start", "content_block_start"] + ["content_block_delta"] * 5 + [
        "content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens == 1
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == ANSWER_PREFIX + "hi"
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 5


def test_tool_use_and_round_trip(client, fake):
    msg = client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS,
                                 messages=user("What is the weather in Paris and London?"))
    assert msg.stop_reason == "tool_use"
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"location": "Paris"}),
                                                  ("get_weather", {"location": "London"})]
    assert all(c.id.startswith("toolu_") for c in calls)
    results = [{"type": "tool_result", "tool_use_id": c.id, "content": f"sunny in {c.input['location']}"}
               for c in calls]
    answer = client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, messages=[
        *user("What is the weather in Paris and London?"),
        {"role": "assistant", "content": msg.content},
        {"role": "user", "content": results}])
    assert answer.content[0].text == ANSWER_PREFIX + "tool said sunny in Paris sunny in London"


def test_forced_tool_and_disable_parallel(client):
    msg = client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS,
                                 tool_choice={"type": "tool", "name": "get_weather",
                                              "disable_parallel_tool_use": True},
                                 messages=user("weather in Tokyo and Paris"))
    assert [b.type for b in msg.content] == ["tool_use"]
    assert msg.content[0].input == {"location": "Tokyo"}


def test_streamed_tool_use(client):
    with client.messages.stream(model=MODEL, max_tokens=200, tools=TOOLS,
                                messages=user("weather in London?")) as stream:
        final = stream.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"][0]
    assert tool.input == {"location": "London"}  # the SDK joined the input_json_delta pieces
    assert final.stop_reason == "tool_use"


def test_images(client, fake):
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "what is this"}]}])
    assert msg.content[0].text == ANSWER_PREFIX + "what is this (images: 2)"


@pytest.mark.parametrize("model, exc, status", [
    ("fail-400", anthropic.BadRequestError, 400),
    ("context-length", anthropic.BadRequestError, 400),
    ("fail-401", anthropic.AuthenticationError, 401),
    ("fail-403", anthropic.PermissionDeniedError, 403),
    ("fail-404", anthropic.NotFoundError, 404),
    ("fail-413", anthropic.ContentTooLargeError, 413),
    ("fail-429", anthropic.RateLimitError, 429),
    ("fail-500", anthropic.InternalServerError, 500),
    ("fail-529", anthropic.InternalServerError, 529),
])
def test_typed_errors(client, model, exc, status):
    with pytest.raises(exc) as info:
        client.messages.create(model=model, max_tokens=10, messages=user("hi"))
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    assert info.value.request_id.startswith("req_")
    if status == 529:
        assert type(info.value).__name__ == "OverloadedError"
    if model == "context-length":
        assert "prompt is too long" in info.value.body["error"]["message"]
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"


def test_wrong_key_and_missing_version(client, fake):
    bad = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-wrong", max_retries=0, timeout=5)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    resp = requests.post(fake.url + "/v1/messages", headers={"x-api-key": KEY},
                         json={"model": MODEL, "max_tokens": 5, "messages": user("hi")}, timeout=5)
    assert resp.status_code == 400 and "anthropic-version" in resp.json()["error"]["message"]


@pytest.mark.parametrize("body, fragment", [
    ({"model": MODEL, "messages": user("hi")}, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": 5, "messages": user("hi"), "n": 1}, "n: Extra inputs are not permitted"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}, *user("hi")]},
     'Unexpected role "system"'),
    ({"model": MODEL, "max_tokens": 5, "messages": user("a") + user("b")}, "roles must alternate"),
    ({"model": MODEL, "max_tokens": 5, "messages": [*user("a"), {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}, *user("b")]},
     "`tool_use` ids were found without `tool_result` blocks"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}]}]}, "media_type"),
])
def test_fake_refuses_what_the_api_refuses(client, body, fragment):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body=body, cast_to=object)
    assert fragment in info.value.body["error"]["message"]


def test_stream_error_event_raises_in_the_sdk(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model="stream-error", max_tokens=100, messages=user("a b c d")) as stream:
            for _ in stream.text_stream:
                pass
    assert info.value.body["error"]["type"] == "overloaded_error"


# ---- extended thinking ----------------------------------------------------------------------------

def test_thinking_block_comes_first(client):
    msg = client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, messages=user("why is the sky"))
    assert [b.type for b in msg.content] == ["thinking", "text"]
    thought = msg.content[0]
    assert isinstance(thought, anthropic.types.ThinkingBlock)
    assert thought.thinking == "Thinking about: why is the sky"
    assert thought.signature == signature(thought.thinking) and len(thought.signature) == 76
    assert msg.content[1].text == ANSWER_PREFIX + "why is the sky"
    assert msg.usage.output_tokens == 6 + 8  # thinking words + answer words


def test_thinking_disabled_is_plain(client):
    msg = client.messages.create(model=MODEL, max_tokens=100, thinking={"type": "disabled"}, messages=user("hi"))
    assert [b.type for b in msg.content] == ["text"]


def test_streamed_thinking(client):
    with client.messages.stream(model=MODEL, max_tokens=2000, thinking=THINKING,
                                messages=user("stream my thoughts")) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta" and e.index == 0]
    assert [d.type for d in deltas] == ["thinking_delta"] * 5 + ["signature_delta"]
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking about: stream my thoughts"
    assert final.content[0].signature == signature("Thinking about: stream my thoughts")
    assert final.content[1].text == ANSWER_PREFIX + "stream my thoughts"
    assert final.usage.output_tokens == 5 + 7


def test_raw_thinking_stream_opens_empty(client):
    events = list(client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, messages=user("hi"),
                                         stream=True))
    first = [e for e in events if e.type == "content_block_start"][0].content_block
    assert (first.type, first.thinking, first.signature) == ("thinking", "", "")


def test_thinking_with_tools_round_trip(client):
    msg = client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS,
                                 messages=user("weather in Tokyo?"))
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    call = msg.content[-1]
    answer = client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS, messages=[
        *user("weather in Tokyo?"),
        {"role": "assistant", "content": [*msg.content, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rainy"}]}])
    assert answer.content[0].thinking == "Thinking about: rainy"
    assert answer.content[1].text == ANSWER_PREFIX + "tool said rainy"


@pytest.mark.parametrize("thinking, max_tokens, fragment", [
    ({"type": "enabled", "budget_tokens": 1000}, 4000, "greater than or equal to 1024"),
    ({"type": "enabled", "budget_tokens": 2048}, 2048, "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ({"type": "enabled"}, 4000, "thinking.enabled.budget_tokens: Field required"),
    ({"type": "sometimes"}, 4000, "does not match any of the expected tags"),
])
def test_bad_thinking_config(client, thinking, max_tokens, fragment):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=max_tokens, thinking=thinking, messages=user("hi"))
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert fragment in info.value.body["error"]["message"]


@pytest.mark.parametrize("block, fragment", [
    ({"type": "thinking", "thinking": "hmm"}, "messages.1.content.0.thinking.signature: Field required"),
    ({"type": "thinking", "thinking": "hmm", "signature": ""}, "Invalid `signature` in `thinking` block"),
    ({"type": "redacted_thinking", "data": ""}, "redacted_thinking.data: Field required"),
])
def test_bad_thinking_blocks_in_history(client, block, fragment):
    body = {"model": MODEL, "max_tokens": 100, "messages": [
        *user("a"), {"role": "assistant", "content": [block, {"type": "text", "text": "b"}]}, *user("c")]}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body=body, cast_to=object)
    assert fragment in info.value.body["error"]["message"]


# ---- prompt caching -------------------------------------------------------------------------------

def cached_call(client, question, ttl=None):
    mark = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return client.messages.create(
        model=MODEL, max_tokens=100, tools=[{**TOOLS[0], "cache_control": mark}],
        system=[{"type": "text", "text": "you are a very patient librarian", "cache_control": mark}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "long shared context here",
                                                "cache_control": mark},
                                               {"type": "text", "text": question}]}])


def test_cache_creation_then_read(client, fake):
    first = cached_call(client, "first question")
    # prefix: tool name + description (1 + 4) + system (6) + the marked text (4) = 15 words
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens,
            first.usage.input_tokens) == (15, 0, 2)
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 15
    second = cached_call(client, "another question entirely")
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens,
            second.usage.input_tokens) == (0, 15, 3)
    fake.reset()  # forgets the cache too
    assert cached_call(client, "first question").usage.cache_creation_input_tokens == 15


def test_cache_extends_a_cached_prefix(client):
    system = [{"type": "text", "text": "shared system prompt", "cache_control": {"type": "ephemeral"}}]
    client.messages.create(model=MODEL, max_tokens=50, system=system, messages=user("one"))
    msg = client.messages.create(model=MODEL, max_tokens=50, system=system, messages=[{"role": "user", "content": [
        {"type": "text", "text": "two three", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}])
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens, msg.usage.input_tokens) \
        == (3, 2, 0)
    assert (msg.usage.cache_creation.ephemeral_5m_input_tokens,
            msg.usage.cache_creation.ephemeral_1h_input_tokens) == (0, 2)


def test_cache_numbers_in_streams(client):
    cached_call(client, "warm up")
    with client.messages.stream(
            model=MODEL, max_tokens=100,
            system=[{"type": "text", "text": "you are a very patient librarian", "cache_control": EPHEMERAL}],
            tools=[{**TOOLS[0], "cache_control": EPHEMERAL}],
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "long shared context here", "cache_control": EPHEMERAL},
                {"type": "text", "text": "a streamed question"}]}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0].message.usage
    assert (start.cache_read_input_tokens, start.cache_creation_input_tokens, start.input_tokens) == (15, 0, 3)
    delta = [e for e in events if e.type == "message_delta"][0].usage
    assert (delta.cache_read_input_tokens, delta.input_tokens, delta.output_tokens) == (15, 3, 11)
    assert final.content[0].text == ANSWER_PREFIX + "long shared context here a streamed question"
    assert (final.usage.cache_read_input_tokens, final.usage.output_tokens) == (15, 11)


@pytest.mark.parametrize("mark, fragment", [
    ({"type": "persistent"}, "expected tags: 'ephemeral'"),
    ({"type": "ephemeral", "ttl": "2d"}, "ttl: Input should be '5m' or '1h'"),
])
def test_bad_cache_control(client, mark, fragment):
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": mark}]}]}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body=body, cast_to=object)
    assert fragment in info.value.body["error"]["message"]


def test_at_most_four_cache_breakpoints(client):
    blocks = [{"type": "text", "text": f"part {n}", "cache_control": {"type": "ephemeral"}} for n in range(5)]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": blocks}])
    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in info.value.message


# ---- count_tokens ---------------------------------------------------------------------------------

def test_count_tokens(client, fake):
    counted = client.messages.count_tokens(model=MODEL, system="be brief", tools=TOOLS,
                                           messages=user("What is the weather in Paris?"))
    assert counted.input_tokens == 2 + 5 + 6  # system + tool name and description + message
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens" and sent["headers"]["anthropic-version"]
    msg = client.messages.create(model=MODEL, max_tokens=100, system="be brief", tools=TOOLS,
                                 messages=user("What is the weather in Paris?"))
    assert msg.usage.input_tokens == counted.input_tokens


def test_count_tokens_validates_like_messages(client, fake):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.count_tokens(model=MODEL, messages=user("a") + user("b"))
    assert "roles must alternate" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages/count_tokens", cast_to=object,
                    body={"model": MODEL, "max_tokens": 10, "messages": user("hi")})
    assert "max_tokens: Extra inputs are not permitted" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-wrong", max_retries=0, timeout=5) \
            .messages.count_tokens(model=MODEL, messages=user("hi"))
    counted = client.messages.count_tokens(model=MODEL, thinking=THINKING, messages=user("one two"))
    assert counted.input_tokens == 2


# ---- documents, betas and newer top-level fields --------------------------------------------------

def test_documents(client):
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "some notes"},
         "title": "notes", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "summarise these"}]}])
    assert msg.content[0].text == ANSWER_PREFIX + "summarise these (images: 1) (documents: 2)"
    # one word per document, both up to the marked one (created); the image counts nothing
    assert (msg.usage.cache_creation_input_tokens, msg.usage.input_tokens) == (2, 2)


def test_bad_document_source(client):
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body=body, cast_to=object)
    assert "source.base64.media_type: Input should be 'application/pdf'" in info.value.body["error"]["message"]


def test_anthropic_beta_header_is_recorded_and_harmless(client, fake):
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"),
                                 extra_headers={"anthropic-beta": "made-up-beta-2099-01-01,token-efficient-tools"})
    assert msg.content[0].text == ANSWER_PREFIX + "hi"
    assert fake.requests[-1]["headers"]["anthropic-beta"] == "made-up-beta-2099-01-01,token-efficient-tools"


def test_newer_top_level_fields_are_accepted(client):
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"),
                                 extra_body={"context_management": {"edits": []}, "container": "container_01",
                                             "mcp_servers": []})
    assert msg.content[0].text == ANSWER_PREFIX + "hi"
