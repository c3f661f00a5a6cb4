"""validate_body: a 400 naming the first bad parameter; unknown parameters pass through."""

import copy

import pytest

from gateway.errors import BadRequestError
from gateway.api.schemas import validate_body

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "demo", "messages": MESSAGES}


def rejects(endpoint, body):
    with pytest.raises(BadRequestError) as info:
        validate_body(endpoint, body)
    err = info.value
    assert err.status == 400
    assert err.type == "invalid_request_error"
    return err


@pytest.mark.parametrize("extra", [
    {},
    {"model": None},
    {"stream": True}, {"stream": False}, {"stream": None},
    {"max_tokens": 2}, {"max_completion_tokens": 5}, {"n": 1}, {"n": 128},
    {"temperature": 0}, {"temperature": 0.7}, {"temperature": 2}, {"top_p": 1},
    {"stop": "\n"}, {"stop": ["a", "b"]}, {"stop": None},
    {"seed": 42}, {"user": "u-1"}, {"logit_bias": {"50256": -100}},
    {"stream_options": {"include_usage": True}},
    {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"},
    {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    {"response_format": {"type": "json_object"}},
    {"logprobs": True, "top_logprobs": 3},
    # Unknown parameters are accepted (OpenAI adds new ones often).
    {"reasoning_effort": "low", "parallel_tool_calls": False, "modalities": ["text"],
     "some_future_param": {"nested": [1, "x"]}},
])
def test_valid_chat_bodies(extra):
    body = {**CHAT, **extra}
    before = copy.deepcopy(body)
    assert validate_body("chat", body) is None
    assert body == before


@pytest.mark.parametrize("extra, param", [
    ({"max_tokens": "2"}, "max_tokens"),
    ({"max_tokens": 2.0}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": "5"}, "max_completion_tokens"),
    ({"n": 1.5}, "n"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages"),
    ({"messages": [{"role": "", "content": "x"}]}, "messages"),
    ({"messages": [{"role": 1, "content": "x"}]}, "messages"),
    ({"messages": MESSAGES + [{"content": "second has no role"}]}, "messages"),
    ({"messages": None}, "messages"),
    ({"stop": 5}, "stop"),
    ({"stop": [1, 2]}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": "x"}, "top_p"),
    ({"model": 5}, "model"),
    ({"seed": 1.5}, "seed"),
    ({"user": 7}, "user"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function"}, "f"]}, "tools"),
    ({"functions": "f"}, "functions"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"stream_options": "include_usage"}, "stream_options"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"logprobs": "yes"}, "logprobs"),
])
def test_invalid_chat_bodies_name_the_param(extra, param):
    err = rejects("chat", {**CHAT, **extra})
    assert err.param == param
    assert err.body()["error"]["param"] == param
    assert param in err.message


def test_missing_messages():
    err = rejects("chat", {"model": "demo"})
    assert err.param == "messages"
    assert "required" in err.message


def test_role_error_says_which_message():
    err = rejects("chat", {"messages": MESSAGES + [{"content": "x"}]})
    assert "messages[1].role" in err.message


def test_first_bad_param_is_reported_deterministically():
    body = {**CHAT, "temperature": "hot", "max_tokens": "2", "n": 1.5}
    params = {rejects("chat", dict(body)).param for _ in range(5)}
    assert len(params) == 1
    assert params <= {"temperature", "max_tokens", "n"}


# --- completions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "Say hi", "", ["a", "b"], [""], [1, 2, 3], [0], [[1, 2], [3]], [[5]],
])
def test_valid_completion_prompts(prompt):
    assert validate_body("completions", {"model": "m", "prompt": prompt, "echo": True, "best_of": 2,
                                         "suffix": "x", "logprobs": 2}) is None


@pytest.mark.parametrize("prompt", [
    None, 5, 1.5, True, {"text": "x"}, [], [1, "a"], ["a", 1], [True], [1.5], [[]], [[1, "a"]],
    [[1], "a"], [["a"]], [[1.0]], [None],
])
def test_invalid_completion_prompts(prompt):
    assert rejects("completions", {"model": "m", "prompt": prompt}).param == "prompt"


def test_completion_prompt_required():
    assert rejects("completions", {"model": "m"}).param == "prompt"


@pytest.mark.parametrize("extra, param", [
    ({"echo": "yes"}, "echo"), ({"best_of": "2"}, "best_of"), ({"logprobs": True}, "logprobs"),
    ({"suffix": 1}, "suffix"), ({"max_tokens": "5"}, "max_tokens"),
])
def test_invalid_completion_params(extra, param):
    assert rejects("completions", {"prompt": "x", **extra}).param == param


# --- embeddings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("inp", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
@pytest.mark.parametrize("fmt", ["float", "base64", None])
def test_valid_embedding_inputs(inp, fmt):
    body = {"model": "m", "input": inp, "encoding_format": fmt, "dimensions": 8, "user": "u",
            "input_type": "query"}
    assert validate_body("embeddings", body) is None


@pytest.mark.parametrize("inp", [None, 3, [], [1, "a"], [[]], [["a"]], {"a": 1}, [True]])
def test_invalid_embedding_inputs(inp):
    assert rejects("embeddings", {"model": "m", "input": inp}).param == "input"


@pytest.mark.parametrize("fmt", ["int8", "FLOAT", "", 1, True])
def test_invalid_encoding_format(fmt):
    assert rejects("embeddings", {"input": "x", "encoding_format": fmt}).param == "encoding_format"


@pytest.mark.parametrize("dims", [0, -1, "8", 8.0])
def test_invalid_dimensions(dims):
    assert rejects("embeddings", {"input": "x", "dimensions": dims}).param == "dimensions"


def test_embedding_input_required():
    assert rejects("embeddings", {"model": "m"}).param == "input"


def test_embedding_unknown_params_accepted():
    assert validate_body("embeddings", {"input": "x", "something_new": [1]}) is None


# --- narrowed schemas -------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint, body", [
    ("chat", {**CHAT, "temperature": "hot", "max_tokens": "2", "n": 1.5}),
    ("chat", {"model": 5}),
    ("chat", {"messages": MESSAGES + [{"content": "x"}], "stop": 5, "extra": {"free": 1}}),
    ("chat", {**CHAT, "tools": {"type": "function"}, "logprobs": "yes", "user": None}),
    ("chat", {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "n": 2}),
    ("completions", {"prompt": [1, "a"], "echo": "yes", "best_of": 2}),
    ("completions", {"model": "m"}),
    ("embeddings", {"input": "x", "encoding_format": "int8", "dimensions": 0}),
    ("embeddings", {}),
])
def test_narrowed_schema_finds_what_the_whole_schema_finds(endpoint, body):
    """Validation runs only the declared fields a body has (plus the required ones): the errors
    must be exactly those of the whole schema."""
    from gateway.api.schemas import _DECLARED, SCHEMAS, _schema_for
    narrowed = _schema_for(endpoint, _DECLARED[endpoint].intersection(body))
    assert narrowed.validate(body) == SCHEMAS[endpoint].validate(body)
