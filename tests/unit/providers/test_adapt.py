"""Shared request/answer adapters (gateway.providers.adapt): params, tools, completions via chat."""

import copy
from types import SimpleNamespace

import orjson
import pytest

from gateway.errors import BadRequestError
from gateway.providers import adapt
from gateway.providers import shapes

MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {"name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TOOLS = [{"type": "function", "function": WEATHER}]


def provider(name="acme", supported=None, tools=False):
    """A stand-in with the capability attributes adapt reads."""
    return SimpleNamespace(name=name, supported_params=supported, tools=tools)


def settings(drop_params=False, add_function_to_prompt=False):
    return SimpleNamespace(drop_params=drop_params, add_function_to_prompt=add_function_to_prompt)


# --- check_params -------------------------------------------------------------------------------------

@pytest.mark.parametrize("drop", [False, True])
def test_check_params_none_passes_everything(drop):
    body = {"messages": MESSAGES, "logit_bias": {"1": 2}, "seed": 3, "n": 4, "x_custom": 1, "tools": TOOLS}
    assert adapt.check_params(provider(supported=None), "chat", body, drop) is body


@pytest.mark.parametrize("body, param", [
    ({"messages": MESSAGES, "top_p": 0.9}, "top_p"),
    ({"messages": MESSAGES, "temperature": 0.1, "logit_bias": {"50256": -100}}, "logit_bias"),
    ({"messages": MESSAGES, "n": 2}, "n"),
    ({"messages": MESSAGES, "response_format": {"type": "json_object"}}, "response_format"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"input": "x", "dimensions": 256}, "dimensions"),
])
def test_check_params_unsupported_is_400(body, param):
    with pytest.raises(BadRequestError) as info:
        adapt.check_params(provider("acme-llm", supported={"temperature", "max_tokens"}), "chat", body, False)
    err = info.value
    assert err.status == 400
    assert err.param == param
    assert err.code == "unsupported_parameter"
    assert "acme-llm" in err.message and f"`{param}`" in err.message
    assert "drop_params" in err.message


@pytest.mark.parametrize("body, expected", [
    ({"messages": MESSAGES, "temperature": 0.2, "top_p": 0.9, "seed": 1},
     {"messages": MESSAGES, "temperature": 0.2}),
    ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 2, "user": "u1", "stream": True},
     {"messages": MESSAGES, "stream": True}),
    ({"messages": MESSAGES, "n": 3, "max_tokens": 5}, {"messages": MESSAGES, "max_tokens": 5}),
])
def test_check_params_drop_params_drops_only_unsupported(body, expected):
    original = copy.deepcopy(body)
    out = adapt.check_params(provider(supported={"temperature", "max_tokens"}), "chat", body, True)
    assert out == expected
    assert body == original


@pytest.mark.parametrize("body", [
    {"messages": MESSAGES, "n": 1},
    {"messages": MESSAGES, "top_p": None, "seed": None},          # explicit nulls are not "sent"
    {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    {"messages": MESSAGES, "model": "m", "encoding_format": "base64"},
    {"messages": MESSAGES, "my_vendor_flag": True},                # non-OpenAI keys are not checked
])
def test_check_params_tolerated(body):
    assert adapt.check_params(provider(supported={"temperature"}), "chat", body, False) is body


# --- prepare_tools --------------------------------------------------------------------------------------

def test_prepare_tools_without_tools_is_noop():
    body = {"messages": MESSAGES, "tools": []}
    assert adapt.prepare_tools(provider(tools=False), body, settings()) is body


@pytest.mark.parametrize("body", [
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto"},
])
def test_prepare_tools_provider_with_tools_keeps_them(body):
    assert adapt.prepare_tools(provider(tools=True), body, settings()) == body


def test_prepare_tools_provider_with_tools_maps_legacy_functions():
    body = {"messages": MESSAGES, "functions": [WEATHER], "function_call": {"name": "get_weather"}}
    translating = provider(tools=True, supported=frozenset({"tools", "tool_choice"}))
    out = adapt.prepare_tools(translating, body, settings())
    assert out == {"messages": MESSAGES, "tools": TOOLS,
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}


def test_prepare_tools_openai_compatible_keeps_legacy_functions():
    body = {"messages": MESSAGES, "functions": [WEATHER], "function_call": {"name": "get_weather"}}
    assert adapt.prepare_tools(provider(tools=True, supported=None), body, settings()) == body


@pytest.mark.parametrize("body", [
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False},
    {"messages": MESSAGES, "functions": [WEATHER], "function_call": "auto"},
])
def test_prepare_tools_add_function_to_prompt(body):
    out = adapt.prepare_tools(provider(tools=False), body, settings(add_function_to_prompt=True))
    for key in ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"):
        assert key not in out
    assert out["messages"][1:] == MESSAGES
    note = out["messages"][0]
    assert note["role"] == "system"
    spec = note["content"].split("Functions: ", 1)[1]
    assert orjson.loads(spec) == [WEATHER]
    assert '{"name": <function name>, "arguments": {...}}' in note["content"]


def test_add_function_to_prompt_appends_to_existing_system_message():
    body = {"messages": [{"role": "system", "content": "Be brief."}, *MESSAGES], "tools": TOOLS}
    out = adapt.prepare_tools(provider(tools=False), body, settings(add_function_to_prompt=True))
    assert len(out["messages"]) == 2
    system = out["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nYou can call these functions.")
    assert orjson.loads(system.split("Functions: ", 1)[1]) == [WEATHER]
    assert body["messages"][0]["content"] == "Be brief."  # the caller's message is not mutated


def test_add_function_to_prompt_system_content_parts():
    body = {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, *MESSAGES],
            "tools": TOOLS}
    out = adapt.prepare_tools(provider(tools=False), body, settings(add_function_to_prompt=True))
    system = shapes.text_of(out["messages"][0]["content"])
    assert system.startswith("Be brief.\n\nYou can call these functions.")
    assert "'type'" not in system and "[{" not in system.split("Functions: ")[0]


def test_add_function_to_prompt_wins_over_drop_params():
    body = {"messages": MESSAGES, "tools": TOOLS}
    out = adapt.prepare_tools(provider(tools=False), body, settings(drop_params=True, add_function_to_prompt=True))
    assert out["messages"][0]["role"] == "system" and "tools" not in out


@pytest.mark.parametrize("body", [
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": True,
     "temperature": 0},
    {"messages": MESSAGES, "functions": [WEATHER], "function_call": "auto", "temperature": 0},
])
def test_prepare_tools_drop_params_removes_them(body):
    out = adapt.prepare_tools(provider(tools=False), body, settings(drop_params=True))
    assert out == {"messages": MESSAGES, "temperature": 0}


@pytest.mark.parametrize("body", [
    {"messages": MESSAGES, "tools": TOOLS},
    {"messages": MESSAGES, "functions": [WEATHER]},
])
def test_prepare_tools_refused_without_settings(body):
    with pytest.raises(BadRequestError) as info:
        adapt.prepare_tools(provider("acme-llm", tools=False), body, settings())
    assert info.value.status == 400
    assert info.value.param == "tools" and info.value.code == "unsupported_parameter"
    assert "acme-llm" in info.value.message and "add_function_to_prompt" in info.value.message


# --- completion_to_chat -------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["Say hi", ["Say hi"]])
def test_completion_to_chat(prompt):
    body = {"model": "m", "prompt": prompt, "max_tokens": 7, "temperature": 0.5, "stream": True,
            "echo": False, "best_of": 1, "suffix": None, "logprobs": 2, "stop": ["\n"]}
    assert adapt.completion_to_chat(body) == {
        "model": "m", "max_tokens": 7, "temperature": 0.5, "stream": True, "stop": ["\n"],
        "messages": [{"role": "user", "content": "Say hi"}]}


@pytest.mark.parametrize("prompt", [
    ["a", "b"],            # several prompts
    [],
    [1, 2, 3],             # token ids
    [[1, 2, 3]],
    [None],
    None,
    42,
])
def test_completion_to_chat_refused(prompt):
    body = {"model": "m"} if prompt is None else {"model": "m", "prompt": prompt}
    with pytest.raises(BadRequestError) as info:
        adapt.completion_to_chat(body)
    assert info.value.status == 400 and info.value.param == "prompt"


# --- chat_to_completion / chat_chunk_to_completion ----------------------------------------------------

def test_chat_to_completion():
    answer = shapes.chat_completion(
        "m", [(shapes.message("Hi there"), "stop"), (shapes.message(None), "length")],
        shapes.usage(3, 2), id_="chatcmpl-1", created=99)
    assert adapt.chat_to_completion(answer) == {
        "id": "chatcmpl-1", "object": "text_completion", "created": 99, "model": "m",
        "choices": [{"index": 0, "text": "Hi there", "logprobs": None, "finish_reason": "stop"},
                    {"index": 1, "text": "", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


STATE = {"id": "chatcmpl-s", "created": 5, "model": "m"}


@pytest.mark.parametrize("chunk, choices", [
    (shapes.chat_chunk(STATE, {"role": "assistant", "content": ""}),
     [{"index": 0, "text": "", "logprobs": None, "finish_reason": None}]),
    (shapes.chat_chunk(STATE, {"content": "Hel"}),
     [{"index": 0, "text": "Hel", "logprobs": None, "finish_reason": None}]),
    (shapes.chat_chunk(STATE, {}, "stop"),
     [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]),
    (shapes.chat_chunk(STATE, {"content": "x"}, None, 1),
     [{"index": 1, "text": "x", "logprobs": None, "finish_reason": None}]),
])
def test_chat_chunk_to_completion(chunk, choices):
    out = adapt.chat_chunk_to_completion(chunk)
    assert out == {"id": "chatcmpl-s", "object": "text_completion", "created": 5, "model": "m",
                   "choices": choices}


@pytest.mark.parametrize("usage", [None, {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}])
def test_chat_chunk_to_completion_keeps_usage(usage):
    chunk = {**STATE, "object": "chat.completion.chunk", "choices": [], "usage": usage}
    out = adapt.chat_chunk_to_completion(chunk)
    assert out["choices"] == [] and out["usage"] == usage and out["object"] == "text_completion"


def test_chat_chunk_to_completion_error_untouched():
    chunk = {"error": {"message": "boom", "type": "upstream_error", "param": None, "code": None}}
    assert adapt.chat_chunk_to_completion(chunk) is chunk


# --- tools_to_function_call / tool_chunk_to_function_call ---------------------------------------------

def test_tools_to_function_call():
    calls = [shapes.tool_call("c1", "get_weather", {"city": "Paris"}),
             shapes.tool_call("c2", "get_time", {})]
    answer = shapes.chat_completion("m", [(shapes.message(None, calls), "tool_calls"),
                                          (shapes.message("plain"), "stop")])
    out = adapt.tools_to_function_call(answer)
    first, second = out["choices"]
    assert first["message"] == {"role": "assistant", "content": None,
                                "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert first["finish_reason"] == "function_call"
    assert second["message"] == {"role": "assistant", "content": "plain"}
    assert second["finish_reason"] == "stop"


def test_tools_to_function_call_without_calls():
    answer = shapes.chat_completion("m", [(shapes.message("hi"), "stop")])
    expected = copy.deepcopy(answer)
    assert adapt.tools_to_function_call(answer) == expected


@pytest.mark.parametrize("delta, finish, expected_delta, expected_finish", [
    ({"role": "assistant", "content": None,
      "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                      "function": {"name": "get_weather", "arguments": ""}}]},
     None, {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ""}},
     None),
    ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
     None, {"function_call": {"arguments": '{"city": '}}, None),
    ({}, "tool_calls", {}, "function_call"),
    ({"content": "hi"}, "stop", {"content": "hi"}, "stop"),
])
def test_tool_chunk_to_function_call(delta, finish, expected_delta, expected_finish):
    chunk = shapes.chat_chunk(STATE, delta, finish)
    out = adapt.tool_chunk_to_function_call(chunk)
    assert out["choices"][0]["delta"] == expected_delta
    assert out["choices"][0]["finish_reason"] == expected_finish


def test_tool_chunks_stream_matches_non_streamed_mapping():
    """Parallel tool calls: legacy `function_call` reports the first call only, streamed or not."""
    chunks = [
        shapes.chat_chunk(STATE, {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        shapes.chat_chunk(STATE, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}),
        shapes.chat_chunk(STATE, {"tool_calls": [
            {"index": 1, "id": "c2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
        shapes.chat_chunk(STATE, {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        shapes.chat_chunk(STATE, {}, "tool_calls"),
    ]
    name, arguments = "", ""
    for chunk in map(adapt.tool_chunk_to_function_call, chunks):
        call = chunk["choices"][0]["delta"].get("function_call") or {}
        name += call.get("name") or ""
        arguments += call.get("arguments") or ""
    assert name == "get_weather"
    assert orjson.loads(arguments) == {"city": "Paris"}


def test_images_refused_for_text_only_providers():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    with pytest.raises(BadRequestError) as info:
        adapt.check_images(SimpleNamespace(name="petals", vision=False), body)
    assert info.value.param == "messages" and "petals" in info.value.message
    adapt.check_images(SimpleNamespace(name="openai", vision=True), body)
    adapt.check_images(SimpleNamespace(name="petals", vision=False),
                       {"messages": [{"role": "user", "content": "plain"}]})
