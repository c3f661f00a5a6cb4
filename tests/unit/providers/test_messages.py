"""Anthropic Messages <-> OpenAI chat (gateway/providers/messages.py), pure: requests, answers, the
event sequence of a translated stream, usage both ways, and the error envelope."""

import pytest

from gateway import errors
from gateway.providers import messages
from gateway.providers.base import AddedUsageOption


class Target:
    """The provider a translation is for: only its name matters here."""

    def __init__(self, name="openai"):
        self.name = name


def chat_of(body, provider="openai", stream=False):
    return messages.to_chat({"model": "m", "max_tokens": 10, **body}, Target(provider), stream)


# ---- requests -----------------------------------------------------------------------------------

def test_system_blocks_and_controls_map_to_chat_fields():
    chat = chat_of({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}],
                    "messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["x"], "temperature": 0.5,
                    "top_p": 0.9, "metadata": {"user_id": "u"}})
    assert chat == {"model": "m", "max_tokens": 10, "messages": [
        {"role": "system", "content": "a\n\nb"}, {"role": "user", "content": "hi"}],
        "stop": ["x"], "temperature": 0.5, "top_p": 0.9, "user": "u"}


def test_a_stream_asks_for_the_usage_chunk():
    chat = chat_of({"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert chat["stream"] is True and isinstance(chat["stream_options"], AddedUsageOption)
    assert chat["stream_options"] == {"include_usage": True}


def test_images_become_image_url_parts():
    chat = chat_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]})
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]


def test_documents_go_as_files_to_openai_and_are_refused_elsewhere():
    doc = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    chat = chat_of({"messages": [{"role": "user", "content": [doc]}]})
    assert chat["messages"][0]["content"] == [{"type": "file", "file": {
        "filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBER"}}]
    with pytest.raises(errors.BadRequestError, match=r"messages\[0\].content\[0\].*document.*ollama"):
        chat_of({"messages": [{"role": "user", "content": [doc]}]}, provider="ollama")
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the text"}}
    assert chat_of({"messages": [{"role": "user", "content": [text_doc]}]}, provider="ollama")["messages"] == [
        {"role": "user", "content": "the text"}]


def test_a_tool_loop_maps_to_tool_calls_and_tool_messages_and_earlier_thinking_is_dropped():
    chat = chat_of({
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "thanks"}]}]})
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "w", "parameters": {"type": "object"}, "description": "weather"}}]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["messages"][1] == {"role": "assistant", "content": "checking", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}}]}
    assert chat["messages"][2:] == [{"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                                    {"role": "user", "content": "thanks"}]


@pytest.mark.parametrize("choice,expected", [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "w"}, {"tool_choice": {"type": "function", "function": {"name": "w"}}}),
])
def test_tool_choice(choice, expected):
    chat = chat_of({"messages": [{"role": "user", "content": "x"}], "tool_choice": choice})
    assert {k: chat[k] for k in expected} == expected


@pytest.mark.parametrize("body,fragment", [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search"),
    ({"mcp_servers": [{"url": "https://x"}]}, "mcp_servers"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "content": []}]}]}, "search_result"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]},
     "only text"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role"),
])
def test_what_chat_cannot_carry_is_a_400_naming_it(body, fragment):
    with pytest.raises(errors.BadRequestError) as caught:
        chat_of({"messages": [{"role": "user", "content": "x"}], **body})
    assert fragment in caught.value.message and caught.value.code == "not_translatable"


class Model(Target):
    def __init__(self, model, **info):
        super().__init__()
        self.model = model
        self.config = type("Config", (), {"model_info": info})()


def test_thinking_budget_becomes_a_reasoning_effort_for_reasoning_models_only():
    def effort(budget, provider):
        return messages.to_chat({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
                                 "thinking": {"type": "enabled", "budget_tokens": budget}},
                                provider).get("reasoning_effort")
    o3 = Model("o3-mini")
    assert (effort(1024, o3), effort(8000, o3), effort(32000, o3)) == ("low", "medium", "high")
    assert effort(8000, Model("gpt-4o")) is None
    assert effort(8000, Model("my-model", supports_reasoning=True)) == "medium"
    assert effort(8000, Model("o3", supports_reasoning=False)) is None


# ---- answers -----------------------------------------------------------------------------------

def test_a_chat_answer_becomes_a_message_with_thinking_text_and_tool_use():
    answer = {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "let me see", "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"a": 1}'}},
                       {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 40}}}
    message = messages.from_chat(answer, "gpt")
    assert message["id"] == "msg_chatcmpl-1" and message["model"] == "gpt" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "text", "text": "let me see"},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "w", "input": {"arguments": "not json"}}]
    assert message["usage"] == {"input_tokens": 60, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 40}


@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"),
                                         ("content_filter", "refusal"), (None, "end_turn")])
def test_stop_reasons(finish, stop):
    answer = {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]}
    assert messages.from_chat(answer, "m")["stop_reason"] == stop


def test_usage_round_trips_with_cache_counts():
    anthropic = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 20,
                 "cache_read_input_tokens": 30}
    openai = messages.openai_usage(anthropic)
    assert (openai["prompt_tokens"], openai["completion_tokens"], openai["total_tokens"]) == (60, 5, 65)
    assert messages.messages_usage(openai) == anthropic


# ---- streams -----------------------------------------------------------------------------------

def chunk(delta=None, finish=None, usage=None):
    out = {"id": "c1", "choices": [] if delta is None and finish is None else [
        {"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def test_a_translated_stream_opens_and_closes_one_block_per_kind():
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "hm"}),
              chunk({"content": "He"}), chunk({"content": "llo"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "w", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
              chunk(finish="tool_calls"), chunk(usage={"prompt_tokens": 9, "completion_tokens": 4})]
    events = list(messages.events_from_chunks(iter(chunks), "gpt"))
    kinds = [(e["type"], e.get("delta", {}).get("type") or (e.get("content_block") or {}).get("type"))
             for e in events]
    assert kinds == [
        ("message_start", None), ("ping", None),
        ("content_block_start", "thinking"), ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"), ("content_block_stop", None),
        ("content_block_start", "text"), ("content_block_delta", "text_delta"), ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", "tool_use"), ("content_block_delta", "input_json_delta"),
        ("content_block_delta", "input_json_delta"), ("content_block_stop", None),
        ("message_delta", None), ("message_stop", None)]
    assert [e["index"] for e in events if "index" in e] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert events[10]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "w", "input": {}}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 9, "output_tokens": 4, "cache_creation_input_tokens": 0,
                                   "cache_read_input_tokens": 0}


def test_a_stream_without_a_usage_chunk_still_ends_well_and_an_empty_one_is_an_error():
    events = list(messages.events_from_chunks(iter([chunk({"content": "x"}), chunk(finish="stop")]), "m"))
    assert events[-2]["delta"]["stop_reason"] == "end_turn" and events[-1] == {"type": "message_stop"}
    with pytest.raises(errors.UpstreamError):
        list(messages.events_from_chunks(iter([]), "m"))


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("exc,kind", [
    (errors.BadRequestError("x"), "invalid_request_error"),
    (errors.AuthenticationError("x"), "authentication_error"),
    (errors.PermissionDeniedError("x"), "permission_error"),
    (errors.GatewayError("x", status=404), "not_found_error"),
    (errors.GatewayError("x", status=429), "rate_limit_error"),
    (errors.GatewayError("x", status=529), "overloaded_error"),
    (errors.GatewayError("x", status=502), "api_error"),
    (errors.UpstreamError("x", code="overloaded_error", upstream_status=529), "overloaded_error"),
])
def test_errors_are_anthropics_envelope(exc, kind):
    assert messages.error_body(exc) == {"type": "error", "error": {"type": kind, "message": "x"}}
