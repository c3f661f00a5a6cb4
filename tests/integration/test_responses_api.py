"""OpenAI's Responses API on the gateway (real gunicorn + gevent processes), called with the official
`openai` SDK: translated through chat, the conversation state kept by the gateway in its database,
scoped to the key that made it and read at once by another instance; SQLite and PostgreSQL."""

import json

import openai
import pytest
import requests

from tests.fakes.anthropic_server import ANSWER_PREFIX as ANTHROPIC_PREFIX
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import ANSWER_PREFIX
from tests.fakes.tgi_server import CHAT_PREFIX as TGI_PREFIX
from tests.fakes.tgi_server import FakeTGI
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import admin_call
from tests.integration.conftest import ledger_row
from tests.integration.conftest import free_port
from tests.pg import schema_url as pg_schema

pytestmark = pytest.mark.integration

MASTER = "sk-master-responses-0123456789"
UPSTREAM_KEY = "sk-ant-api03-responses-upstream-0123456789"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                         "required": ["location"]}}]


@pytest.fixture(scope="module")
def fake_anthropic():
    with FakeAnthropic(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def fake_tgi():
    with FakeTGI() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request, fake_openai, fake_anthropic, fake_tgi, tmp_path_factory):
    """Two gateway instances on one database (SQLite file, or a PostgreSQL schema)."""
    import yaml
    folder = tmp_path_factory.mktemp(f"gw-responses-{request.param}")
    models = [
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake_openai.url + "/v1",
                                                 "api_key": fake_openai.api_key}},
        # an OpenAI-compatible server (no Responses API of its own here): through chat
        {"model_name": "vllm", "litellm_params": {"model": "hosted_vllm/gpt-4o-mini",
                                                  "api_base": fake_openai.url + "/v1", "api_key": fake_openai.api_key,
                                                  "input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}},
        # `openai/` in front of a server with chat but no /responses (TGI's OpenAI-compatible route)
        {"model_name": "tgi", "litellm_params": {"model": "openai/tgi", "api_base": fake_tgi.url + "/v1",
                                                 "api_key": fake_tgi.api_key}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20241022",
                                                    "api_base": fake_anthropic.url, "api_key": UPSTREAM_KEY}},
        {"model_name": "stream-error", "litellm_params": {"model": "openai/stream-error",
                                                          "api_base": fake_openai.url + "/v1",
                                                          "api_key": fake_openai.api_key}},
        {"model_name": "vllm-stream-error", "litellm_params": {"model": "hosted_vllm/stream-error",
                                                               "api_base": fake_openai.url + "/v1",
                                                               "api_key": fake_openai.api_key}},
    ]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "general_settings": {"master_key": MASTER}}))
    with pg_schema() if request.param == "postgresql" else _nothing() as pg_url:
        url = pg_url or f"sqlite:///{folder / 'gateway.sqlite'}"
        instances = []
        try:
            for n in range(2):
                gw = GatewayProcess(["--config", str(path), "--num_workers", "2"], {"DATABASE_URL": url},
                                    folder / f"gw{n}.log", free_port())
                instances.append(gw)
            for gw in instances:
                gw.wait_ready()
            yield instances
        finally:
            for gw in instances:
                gw.stop()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def sdk(gw, key=MASTER):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_openai_gets_the_whole_conversation_and_keeps_no_state(cluster, fake_openai):
    first_gw, second_gw = cluster
    first = sdk(first_gw).responses.create(model="gpt", input="hello there", instructions="be brief")
    assert first.id.startswith("resp_") and len(first.id) == 53 and first.output_text == ANSWER_PREFIX + "hello there"
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/v1/responses" and sent["json"]["store"] is False
    assert sent["json"]["instructions"] == "be brief" and sent["json"]["model"] == "gpt-4o-mini"
    second = sdk(second_gw).responses.create(model="gpt", input="and again", previous_response_id=first.id)
    assert (second.previous_response_id, second.store) == (first.id, True)
    body = fake_openai.requests[-1]["json"]
    assert "previous_response_id" not in body and "instructions" not in body
    assert [item.get("role") or item["type"] for item in body["input"]] == ["user", "assistant", "user"]
    assert body["input"][1]["content"][0]["text"] == first.output_text
    assert all("id" not in item for item in body["input"])  # the gateway's ids stay here
    assert sdk(first_gw).responses.retrieve(second.id).output_text == ANSWER_PREFIX + "and again"


def test_create_retrieve_and_chain_across_instances(cluster, fake_openai):
    first_gw, second_gw = cluster
    first = sdk(first_gw).responses.create(model="vllm", input="hello there", instructions="be brief")
    assert first.id.startswith("resp_") and len(first.id) >= 48
    assert first.status == "completed" and first.output_text == ANSWER_PREFIX + "hello there"
    assert first.usage.input_tokens > 0 and first.usage.output_tokens == len(first.output_text.split())
    chat = fake_openai.requests[-1]["json"]
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    # the other instance reads it at once, and continues the conversation from it
    assert sdk(second_gw).responses.retrieve(first.id).output_text == first.output_text
    second = sdk(second_gw).responses.create(model="vllm", input="and again", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == ANSWER_PREFIX + "and again"
    sent = fake_openai.requests[-1]["json"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # instructions are not carried over
    assert sent[1]["content"] == first.output_text
    items = sdk(first_gw).responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "and again"


@pytest.mark.parametrize("model", ["gpt", "vllm"])
def test_a_stream_is_the_documented_event_sequence_and_is_stored_before_it_completes(cluster, model):
    first_gw, second_gw = cluster
    kinds, completed = [], None
    with sdk(first_gw).responses.stream(model=model, input="stream this") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.completed":
                completed = event.response
                # stored before the client saw response.completed: the other instance has it
                assert sdk(second_gw).responses.retrieve(completed.id).status == "completed"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert completed.output_text == ANSWER_PREFIX + "stream this" and completed.usage.output_tokens > 0
    assert completed.id.startswith("resp_") and len(completed.id) == 53


@pytest.mark.parametrize("model", ["gpt", "vllm"])
def test_function_calls_round_trip(cluster, fake_openai, model):
    gw = cluster[0]
    first = sdk(gw).responses.create(model=model, input="weather in Paris?", tools=TOOLS)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)
    second = sdk(gw).responses.create(model=model, previous_response_id=first.id, tools=TOOLS, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.status == "completed"
    if model == "gpt":  # Responses items as they were
        sent = fake_openai.requests[-1]["json"]["input"]
        assert sent[-2]["type"] == "function_call" and sent[-2]["call_id"] == call.call_id
        assert sent[-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    else:
        sent = fake_openai.requests[-1]["json"]["messages"]
        assert sent[-2]["tool_calls"][0]["id"] == call.call_id
        assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_an_openai_compatible_server_without_responses_answers_through_chat(cluster, fake_tgi):
    fake_tgi.reset()
    for gw in cluster:
        for _ in range(2):  # the first call finds /responses missing; the next goes straight to chat
            assert sdk(gw).responses.create(model="tgi", input="hi tgi").output_text == TGI_PREFIX + "hi tgi"
    paths = [r["path"] for r in fake_tgi.requests]
    assert paths.count("/v1/chat/completions") == 4 and 1 <= paths.count("/v1/responses") <= 4


def test_another_provider_answers_through_chat(cluster):
    answer = sdk(cluster[0]).responses.create(model="claude", input="hi claude", max_output_tokens=64)
    assert answer.output_text == ANTHROPIC_PREFIX + "hi claude"


def test_a_stored_response_is_its_keys_alone_and_ids_are_unguessable(cluster):
    gw = cluster[0]
    mine = admin_call(gw, MASTER, "POST", "/key/generate", json={})["key"]
    other = admin_call(gw, MASTER, "POST", "/key/generate", json={})["key"]
    made = sdk(gw, mine).responses.create(model="gpt", input="private")
    for call in (lambda c: c.responses.retrieve(made.id), lambda c: c.responses.input_items.list(made.id),
                 lambda c: c.responses.delete(made.id),
                 lambda c: c.responses.create(model="gpt", input="x", previous_response_id=made.id)):
        with pytest.raises(openai.NotFoundError):
            call(sdk(gw, other))
    assert sdk(gw, mine).responses.retrieve(made.id).id == made.id
    sdk(gw, mine).responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gw, mine).responses.retrieve(made.id)
    assert caught.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gw, mine).responses.create(model="gpt", input="x", previous_response_id=made.id)
    assert caught.value.code == "previous_response_not_found"


def test_store_false_keeps_nothing(cluster):
    gw = cluster[0]
    made = sdk(gw).responses.create(model="gpt", input="forget me", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        sdk(gw).responses.retrieve(made.id)


@pytest.mark.parametrize("model", ["stream-error", "vllm-stream-error"])
def test_a_stream_error_is_raised_by_the_sdk(cluster, model):
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for event in sdk(cluster[0]).responses.create(model=model, input="x", stream=True):
            seen.append(event.type)
    assert "upstream" in str(caught.value).lower() and "response.created" in seen
    assert "response.completed" not in seen


def test_spend_rows_carry_the_responses_usage(cluster):
    gw = cluster[0]
    resp = requests.post(gw.url + "/v1/responses", json={"model": "vllm", "input": "bill me"}, timeout=20,
                         headers={"Authorization": f"Bearer {MASTER}"})
    usage = resp.json()["usage"]
    row = ledger_row(gw, MASTER, resp.headers["x-request-id"])
    assert (row["call_type"], row["prompt_tokens"], row["completion_tokens"]) == (
        "responses", usage["input_tokens"], usage["output_tokens"])
    assert row["spend"] == pytest.approx(usage["input_tokens"] * 1.5e-7 + usage["output_tokens"] * 6e-7, rel=1e-6)
