"""Anthropic's Messages API on the gateway (a real gunicorn + gevent process), called with the official
`anthropic` SDK: passed through to an Anthropic deployment, translated through chat for an OpenAI one;
Anthropic-shaped errors; spend at the cache prices; count_tokens."""

import json

import anthropic
import pytest
import requests

from tests.fakes.anthropic_server import ANSWER_PREFIX
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import signature
from tests.fakes.aws_server import ACCESS_KEY
from tests.fakes.aws_server import SECRET_KEY
from tests.fakes.aws_server import FakeAWS
from tests.fakes.openai_server import ANSWER_PREFIX as OPENAI_PREFIX
from tests.integration import conftest
from tests.integration.conftest import admin_call
from tests.integration.conftest import config_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-master-messages-0123456789"
UPSTREAM_KEY = "sk-ant-api03-messages-upstream-0123456789"
CLAUDE = "claude-3-5-sonnet-20241022"  # $3 / $15 per million; cache writes $3.75, reads $0.30
BEDROCK_CLAUDE = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}]


@pytest.fixture(scope="module")
def fake_anthropic():
    with FakeAnthropic(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def fake_aws():
    with FakeAWS() as server:
        yield server


def bedrock(name, model, fake):
    return {"model_name": name, "litellm_params": {
        "model": f"bedrock/{model}", "api_base": fake.url, "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY, "aws_region_name": "us-east-1"}}


@pytest.fixture(scope="module")
def gateway(fake_anthropic, fake_openai, fake_aws, tmp_path_factory):
    models = [
        bedrock("bedrock-claude", BEDROCK_CLAUDE, fake_aws),
        bedrock("bedrock-stream-error", "anthropic.stream-error-v1:0", fake_aws),
        {"model_name": "claude", "litellm_params": {"model": f"anthropic/{CLAUDE}", "api_base": fake_anthropic.url,
                                                    "api_key": UPSTREAM_KEY}},
        {"model_name": "stream-error", "litellm_params": {"model": "anthropic/stream-error",
                                                          "api_base": fake_anthropic.url, "api_key": UPSTREAM_KEY}},
        {"model_name": "overloaded", "litellm_params": {"model": "anthropic/fail-529",
                                                        "api_base": fake_anthropic.url, "api_key": UPSTREAM_KEY}},
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake_openai.url + "/v1",
                                                 "api_key": fake_openai.api_key}},
    ]
    config = {"model_list": models, "general_settings": {"master_key": MASTER},
              "router_settings": {"allowed_fails": 1000}}
    gw = config_gateway(tmp_path_factory.mktemp("gw-messages"), config)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _fresh(fake_anthropic):
    fake_anthropic.reset()


@pytest.fixture(scope="module")
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER, max_retries=0, timeout=20)


def hello(text="hello there"):
    return [{"role": "user", "content": text}]


def cost_of(raw):
    return float(raw.headers["x-litellm-response-cost"])


# ---- passed through to Anthropic ---------------------------------------------------------------

def test_an_anthropic_deployment_gets_the_body_as_sent_and_the_client_its_answer(client, fake_anthropic):
    system = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    raw = client.messages.with_raw_response.create(
        model="claude", max_tokens=50, system=system, messages=hello(), metadata={"user_id": "u-1"},
        extra_body={"top_k": 5})
    message = raw.parse()
    assert message.content[0].text == ANSWER_PREFIX + "hello there"
    assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
    sent = fake_anthropic.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["json"] == {"model": CLAUDE, "max_tokens": 50, "system": system, "messages": hello(),
                            "metadata": {"user_id": "u-1"}, "top_k": 5}
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY  # the deployment's key, never the client's
    usage = message.usage
    assert cost_of(raw) == pytest.approx(claude_cost(usage), rel=1e-6)


def claude_cost(usage):
    """What the claude deployment's usage costs: input, cache writes and reads, output at their prices."""
    return (usage.input_tokens * 3e-6 + (usage.cache_creation_input_tokens or 0) * 3.75e-6
            + (usage.cache_read_input_tokens or 0) * 3e-7 + usage.output_tokens * 15e-6)


def test_the_clients_anthropic_headers_reach_the_upstream(gateway, fake_anthropic):
    resp = requests.post(gateway.url + "/anthropic/v1/messages", timeout=20, json={
        "model": "claude", "max_tokens": 20, "messages": hello()}, headers={
        "x-api-key": MASTER, "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"})
    assert resp.status_code == 200, resp.text
    headers = fake_anthropic.requests[-1]["headers"]
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert headers["anthropic-version"] == "2023-06-01"


def test_a_stream_passes_through_event_by_event(client, fake_anthropic):
    with client.messages.stream(model="claude", max_tokens=50, messages=hello("stream me")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER_PREFIX + "stream me"
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"
    assert fake_anthropic.requests[-1]["json"]["stream"] is True


def test_tool_use_streams_its_input_json(client):
    with client.messages.stream(model="claude", max_tokens=100, tools=TOOLS,
                                messages=hello("weather in Tokyo?")) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.input for c in calls] == [{"location": "Tokyo"}] and final.stop_reason == "tool_use"


def test_an_error_inside_an_anthropic_stream_reaches_the_sdk_as_an_error_event(client):
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="stream-error", max_tokens=50, messages=hello()) as stream:
            for _ in stream.text_stream:
                pass
    assert "Overloaded" in str(caught.value)


def test_an_upstream_error_is_anthropics_envelope_with_its_status(client):
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="overloaded", max_tokens=10, messages=hello())
    assert caught.value.status_code == 529
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "overloaded_error"


# ---- translated through chat -------------------------------------------------------------------

def test_an_openai_deployment_answers_through_chat(client, fake_openai):
    raw = client.messages.with_raw_response.create(
        model="gpt", max_tokens=40, system="be brief", messages=hello("hi gpt"), stop_sequences=["zzz"],
        metadata={"user_id": "end-user-1"})
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == OPENAI_PREFIX + "hi gpt"
    assert message.stop_reason == "end_turn" and message.model == "gpt"
    chat = fake_openai.requests[-1]["json"]
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi gpt"}]
    assert (chat["model"], chat["max_tokens"], chat["stop"], chat["user"]) == ("gpt-4o-mini", 40, ["zzz"],
                                                                              "end-user-1")
    usage = message.usage
    assert usage.input_tokens > 0 and usage.output_tokens == len((OPENAI_PREFIX + "hi gpt").split())
    assert cost_of(raw) == pytest.approx(usage.input_tokens * 1.5e-7 + usage.output_tokens * 6e-7, rel=1e-6)


def test_a_translated_stream_is_anthropics_event_sequence(gateway, client):
    with client.messages.stream(model="gpt", max_tokens=40, messages=hello("stream gpt")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == OPENAI_PREFIX + "stream gpt"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(text.split())
    # the raw events, in Anthropic's order and framing
    resp = requests.post(gateway.url + "/v1/messages", timeout=20, stream=True, headers={"x-api-key": MASTER},
                         json={"model": "gpt", "max_tokens": 40, "stream": True, "messages": hello("x")})
    lines = list(resp.iter_lines(decode_unicode=True))
    names = [line[len("event: "):] for line in lines if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "data: [DONE]" not in lines


def test_a_translated_tool_loop(client, fake_openai):
    with client.messages.stream(model="gpt", max_tokens=100, tools=TOOLS,
                                messages=hello("weather in Paris?")) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and final.stop_reason == "tool_use"
    sent = fake_openai.requests[-1]["json"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    followup = [*hello("weather in Paris?"), {"role": "assistant", "content": [call.model_dump()]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    answer = client.messages.create(model="gpt", max_tokens=100, tools=TOOLS, messages=followup)
    assert answer.content[0].type == "text"
    chat = fake_openai.requests[-1]["json"]["messages"]
    assert chat[1]["tool_calls"][0]["id"] == call.id
    assert chat[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


def test_what_chat_cannot_carry_is_a_400_naming_it(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt", max_tokens=10, messages=hello(),
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "web_search" in caught.value.body["error"]["message"]
    assert caught.value.body["error"]["type"] == "invalid_request_error"


# ---- the gateway's own answers ------------------------------------------------------------------

def test_bad_requests_and_keys_get_anthropic_errors(gateway, client):
    resp = requests.post(gateway.url + "/v1/messages", json={"model": "claude", "messages": hello()}, timeout=20,
                         headers={"x-api-key": MASTER})
    assert resp.status_code == 400 and resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "invalid_request_error" and "max_tokens" in resp.json()["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=10, messages=hello())
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0).messages.create(
            model="claude", max_tokens=10, messages=hello())
    assert caught.value.body["type"] == "error"
    assert "sk-wrong" not in str(caught.value.body)


def test_a_virtual_key_by_x_api_key_reaches_only_its_models(gateway):
    key = admin_call(gateway, MASTER, "POST", "/key/generate", json={"models": ["claude"]})["key"]
    own = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)
    assert own.messages.create(model="claude", max_tokens=10, messages=hello()).content[0].text
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        own.messages.create(model="gpt", max_tokens=10, messages=hello())
    assert caught.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        own.messages.count_tokens(model="gpt", messages=hello())


def test_count_tokens_is_the_translated_prompts_estimate_off_anthropic(client):
    short = client.messages.count_tokens(model="gpt", messages=hello("hello there, how are you"))
    long = client.messages.count_tokens(model="gpt", messages=hello("hi " * 400))
    assert 0 < short.input_tokens < long.input_tokens


def test_count_tokens_on_anthropic_is_anthropics_own_count(client, fake_anthropic):
    counted = client.messages.count_tokens(model="claude", system="be brief", messages=hello("one two three"))
    sent = fake_anthropic.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens" and sent["json"]["model"] == CLAUDE
    assert counted.input_tokens == len("be brief one two three".split())


# ---- thinking and prompt caching, passed through --------------------------------------------------

THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_blocks_keep_their_signatures_both_ways(client, fake_anthropic):
    first = client.messages.create(model="claude", max_tokens=2048, thinking=THINKING, tools=TOOLS,
                                   messages=hello("weather in Paris?"))
    thought, call = first.content[0], first.content[-1]
    assert thought.type == "thinking" and thought.signature == signature(thought.thinking)
    # the tool loop sends the signed thought back: the upstream gets it unchanged
    followup = [*hello("weather in Paris?"), {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    with client.messages.stream(model="claude", max_tokens=2048, thinking=THINKING, tools=TOOLS,
                                messages=followup) as stream:
        final = stream.get_final_message()
    sent = fake_anthropic.requests[-1]["json"]["messages"][1]["content"][0]
    assert sent == {"type": "thinking", "thinking": thought.thinking, "signature": thought.signature}
    streamed = final.content[0]
    assert streamed.type == "thinking" and streamed.signature == signature(streamed.thinking)
    assert final.content[-1].text.endswith("tool said sunny")


def test_prompt_cache_writes_and_reads_are_billed_at_their_prices(client):
    system = [{"type": "text", "text": "a long shared instruction " * 20, "cache_control": {"type": "ephemeral"}}]
    costs, usages = [], []
    for _ in range(2):
        raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, system=system,
                                                       messages=hello())
        usages.append(raw.parse().usage)
        costs.append(cost_of(raw))
    written, read = usages
    assert written.cache_creation_input_tokens == 80 and written.cache_read_input_tokens == 0
    assert read.cache_read_input_tokens == 80 and read.cache_creation_input_tokens == 0
    assert costs == [pytest.approx(claude_cost(written), rel=1e-6), pytest.approx(claude_cost(read), rel=1e-6)]
    assert costs[1] < costs[0]  # 80 tokens at $0.30/M instead of $3.75/M
    with client.messages.stream(model="claude", max_tokens=50, system=system, messages=hello()) as stream:
        streamed = stream.get_final_message().usage
    assert streamed.cache_read_input_tokens == 80


def ledger_row(gateway, request_id):
    return conftest.ledger_row(gateway, MASTER, request_id)


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_a_streams_row_has_its_usage_and_cost(gateway, model):
    body = {"model": model, "max_tokens": 50, "stream": True, "messages": hello("count this stream"),
            "system": [{"type": "text", "text": "shared words " * 10, "cache_control": {"type": "ephemeral"}}]}
    resp = requests.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": MASTER}, timeout=20)
    events = [json.loads(line[len("data: "):]) for line in resp.text.splitlines() if line.startswith("data: ")]
    usage = {**events[0]["message"]["usage"], **events[-2]["usage"]}
    row = ledger_row(gateway, resp.headers["x-request-id"])
    assert (row["call_type"], row["status"], row["stream"], row["model_group"]) == ("messages", "success", True, model)
    prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, usage["output_tokens"])
    assert not row["estimated"]
    if model == "claude":
        assert usage["cache_creation_input_tokens"] == 20
        expected = (usage["input_tokens"] * 3e-6 + 20 * 3.75e-6 + usage["output_tokens"] * 15e-6)
    else:
        expected = prompt * 1.5e-7 + usage["output_tokens"] * 6e-7
    assert row["spend"] == pytest.approx(expected, rel=1e-6)


# ---- Claude on Bedrock: InvokeModel with Anthropic's body ----------------------------------------

def test_claude_on_bedrock_gets_anthropics_body_through_invoke_model(client, fake_aws):
    system = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    message = client.messages.create(model="bedrock-claude", max_tokens=2048, system=system, thinking=THINKING,
                                     messages=hello("hi bedrock"), extra_headers={"anthropic-beta": "a-1,b-2"})
    assert message.content[0].type == "thinking" and message.content[0].signature == signature(
        message.content[0].thinking)
    assert message.content[-1].text == ANSWER_PREFIX + "hi bedrock"
    sent = fake_aws.requests[-1]
    assert sent["path"].endswith("/invoke")
    assert sent["json"] == {"max_tokens": 2048, "system": system, "thinking": THINKING, "messages": hello("hi bedrock"),
                            "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["a-1", "b-2"]}


def test_claude_on_bedrock_streams_anthropics_events(client, fake_aws):
    with client.messages.stream(model="bedrock-claude", max_tokens=100, tools=TOOLS,
                                messages=hello("weather in London?")) as stream:
        final = stream.get_final_message()
    assert fake_aws.requests[-1]["path"].endswith("/invoke-with-response-stream")
    assert [b.input for b in final.content if b.type == "tool_use"] == [{"location": "London"}]
    assert final.usage.output_tokens > 0
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model="bedrock-stream-error", max_tokens=50, messages=hello()) as broken:
            for _ in broken.text_stream:
                pass


def test_a_budgeted_key_is_refused_in_anthropics_shape_once_spent(gateway):
    key = admin_call(gateway, MASTER, "POST", "/key/generate", json={"max_budget": 1e-9})["key"]
    own = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)
    own.messages.create(model="claude", max_tokens=10, messages=hello())  # admitted: some budget was left
    with pytest.raises(anthropic.RateLimitError) as caught:
        own.messages.create(model="claude", max_tokens=10, messages=hello())
    assert caught.value.body["error"]["type"] == "rate_limit_error" and "budget" in str(caught.value).lower()
