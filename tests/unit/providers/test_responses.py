"""OpenAI Responses <-> chat (gateway/providers/responses.py), pure: input items, requests, answers and
the event sequence of a translated stream."""

import json

import pytest

from gateway import errors
from gateway.providers import responses


class Target:
    def __init__(self, name="openai", model="gpt-4o-mini"):
        self.name = name
        self.model = model
        self.config = type("Config", (), {"model_info": {}})()


def chat_of(body, provider=None, stream=False):
    return responses.to_chat({"model": "m", **body}, provider or Target(), stream)


# ---- input items --------------------------------------------------------------------------------

def test_a_string_input_is_one_user_message_item_with_an_unguessable_id():
    (item,) = responses.input_items("hi")
    assert item["type"] == "message" and item["role"] == "user"
    assert item["content"] == [{"type": "input_text", "text": "hi"}]
    assert item["id"].startswith("msg_") and len(item["id"]) == 4 + 48
    assert responses.input_items("hi")[0]["id"] != item["id"]


@pytest.mark.parametrize("value,fragment", [
    ([], "non-empty"), ([{"role": "robot", "content": "x"}], "role"), (["x"], "object"),
    ([{"type": "function_call_output", "output": "x"}], "call_id"), ([{"content": "x"}], "type"),
])
def test_malformed_input_is_a_400(value, fragment):
    with pytest.raises(errors.BadRequestError, match=fragment):
        responses.input_items(value)


# ---- requests -----------------------------------------------------------------------------------

def test_a_conversation_with_tools_becomes_chat_messages():
    chat = chat_of({
        "instructions": "be brief", "max_output_tokens": 50, "temperature": 0.2, "user": "u",
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "w"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        "input": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                         {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{\"a\":1}"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]})
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "system", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert (chat["max_tokens"], chat["temperature"], chat["user"]) == (50, 0.2, "u")
    assert chat["tools"] == [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"},
                                                                 "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "out",
                                                                              "schema": {"type": "object"}}}


@pytest.mark.parametrize("body,fragment", [
    ({"tools": [{"type": "web_search_preview"}]}, "web_search_preview"),
    ({"input": [{"type": "file_search_call", "id": "x"}]}, "file_search_call"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "file"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]}, "only text"),
])
def test_what_chat_cannot_carry_is_a_400_naming_it(body, fragment):
    with pytest.raises(errors.BadRequestError, match=fragment):
        chat_of({"input": "x", **body}, provider=Target("ollama", "llama3"))


def test_reasoning_effort_goes_to_reasoning_models_only_and_streams_ask_for_usage():
    assert chat_of({"input": "x", "reasoning": {"effort": "high"}}, Target(model="o3"))["reasoning_effort"] == "high"
    assert "reasoning_effort" not in chat_of({"input": "x", "reasoning": {"effort": "high"}})
    chat = chat_of({"input": "x"}, stream=True)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


# ---- answers ------------------------------------------------------------------------------------

def test_a_chat_answer_becomes_a_response_with_its_echo_fields():
    answer = {"choices": [{"finish_reason": "tool_calls", "message": {
        "content": "let me see", "reasoning_content": "hm",
        "tool_calls": [{"id": "call_9", "function": {"name": "w", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 3}}}
    body = {"model": "gpt", "input": [], "previous_response_id": "resp_prev", "store": False, "temperature": 0.5}
    out = responses.from_chat(answer, body, "resp_x")
    assert (out["id"], out["object"], out["status"], out["model"]) == ("resp_x", "response", "completed", "gpt")
    assert (out["previous_response_id"], out["store"], out["temperature"], out["tool_choice"]) == (
        "resp_prev", False, 0.5, "auto")
    assert [item["type"] for item in out["output"]] == ["reasoning", "message", "function_call"]
    assert out["output"][1]["content"] == [{"type": "output_text", "text": "let me see", "annotations": []}]
    assert out["output"][2]["call_id"] == "call_9" and out["output"][2]["status"] == "completed"
    assert out["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 4,
                            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14}
    assert responses.chat_usage(out["usage"])["prompt_tokens_details"] == {"cached_tokens": 3}


def test_a_length_cut_answer_is_incomplete():
    out = responses.from_chat({"choices": [{"finish_reason": "length", "message": {"content": "x"}}]}, {}, "r")
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}


def chunk(delta=None, finish=None, usage=None):
    out = {"choices": [] if delta is None and finish is None else [{"index": 0, "delta": delta or {},
                                                                     "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def test_a_translated_stream_is_the_responses_event_sequence():
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "He"}), chunk({"content": "llo"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "w", "arguments": "{\"a\""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
              chunk(finish="tool_calls"), chunk(usage={"prompt_tokens": 5, "completion_tokens": 2})]
    events = list(responses.events_from_chunks(iter(chunks), {"model": "gpt"}, "resp_1"))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert json.loads(final["output"][1]["arguments"]) == {"a": 1} and final["output"][1]["call_id"] == "call_1"
    assert final["usage"]["total_tokens"] == 7 and final["status"] == "completed"
    assert events[8]["item"]["status"] == "completed" and events[6]["text"] == "Hello"


# ---- passed through to OpenAI and Azure ----------------------------------------------------------

def _deployment(model, **params):
    from gateway import providers
    from gateway.config.settings import DeploymentConfig
    return providers.build(DeploymentConfig(model_name="m", params={"model": model, "api_key": "sk-x", **params},
                                            model_info={}, index=0))


def test_openai_gets_the_conversation_without_the_gateways_state():
    provider = _deployment("openai/gpt-4o", max_tokens=100, temperature=0.1)
    body = {"model": "m", "input": [{"type": "message", "id": "msg_ours", "role": "user", "content": []},
                                    {"type": "reasoning", "id": "rs_1", "summary": []},
                                    {"type": "function_call", "id": "fc_ours", "call_id": "c", "name": "w",
                                     "arguments": "{}"}],
            "previous_response_id": "resp_prev", "store": True, "max_output_tokens": 9, "fallbacks": ["x"]}
    prepared = provider.prepare_body("responses", body)
    assert prepared == {"model": "gpt-4o", "temperature": 0.1, "max_output_tokens": 9, "store": False, "input": [
        {"type": "message", "role": "user", "content": []},
        {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"}]}
    assert provider.build_request("responses", prepared, False).url == "https://api.openai.com/v1/responses"


def test_azure_responses_url_is_outside_the_deployment_with_an_api_version_that_has_it():
    old = _deployment("azure/my-dep", api_base="https://x.openai.azure.com", api_version="2024-02-01")
    assert old.urls["responses"] == "https://x.openai.azure.com/openai/responses?api-version=2025-03-01-preview"
    new = _deployment("azure/my-dep", api_base="https://x.openai.azure.com", api_version="2025-04-01-preview")
    assert new.urls["responses"].endswith("api-version=2025-04-01-preview")
    assert new.prepare_body("responses", {"model": "m", "input": "x"})["model"] == "my-dep"


def test_response_events_pass_through_and_failures_end_the_stream():
    provider = _deployment("openai/gpt-4o")
    state = {}
    delta = {"type": "response.output_text.delta", "delta": "hi", "sequence_number": 3}
    assert provider.parse_stream_event("responses", json.dumps(delta).encode(), state) == [delta]
    assert not provider.stream_ended(state)
    provider.parse_stream_event("responses", b'{"type": "response.completed", "response": {}}', state)
    assert provider.stream_ended(state)
    for failure in ({"type": "error", "code": "server_error", "message": "boom"},
                    {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}):
        with pytest.raises(errors.UpstreamError, match="boom"):
            provider.parse_stream_event("responses", json.dumps(failure).encode(), {})


def test_openai_compatible_services_and_other_providers_answer_through_chat():
    assert _deployment("openai/gpt-4o").native_responses
    assert _deployment("azure/d", api_base="https://x.openai.azure.com").native_responses
    assert not _deployment("groq/llama3-8b").native_responses
    assert not _deployment("anthropic/claude-3-5-sonnet-20241022").native_responses
