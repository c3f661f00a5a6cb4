"""parse_body: strict JSON first, trailing commas forgiven, everything else a 400 invalid_json."""

import pytest

from gateway.errors import BadRequestError
from gateway.api.body import parse_body


@pytest.mark.parametrize("raw, expected", [
    (b'{"a": 1}', {"a": 1}),
    (b'{"a": 1,}', {"a": 1}),
    (b'{"a": [1, 2,]}', {"a": [1, 2]}),
    (b'{"a": [1, 2, ], }', {"a": [1, 2]}),
    (b'{"a": {"b": {"c": [1,],},},}', {"a": {"b": {"c": [1]}}}),
    (b'{\n  "model": "demo",\n  "messages": [\n    {"role": "user", "content": "hi",},\n  ],\n}\n',
     {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
    (b'{"a": 1 ,\t\r\n }', {"a": 1}),
    (b'{"a": [[1,],[2,],],}', {"a": [[1], [2]]}),
    (b'{"a": [{},],}', {"a": [{}]}),
    (b'  {"a": 1,}  ', {"a": 1}),
    (b'{"a": "x",}\n', {"a": "x"}),
], ids=repr)
def test_trailing_commas_are_forgiven(raw, expected):
    assert parse_body(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    # Commas and brackets inside strings are content, never syntax.
    (b'{"a": "a,]"}', {"a": "a,]"}),
    (b'{"a": "a,}",}', {"a": "a,}"}),
    (b'{"a": "a, ]", "b": [1,],}', {"a": "a, ]", "b": [1]}),
    (b'{"a": "x\\",}",}', {"a": 'x",}'}),
    (b'{"a": "x\\\\",}', {"a": "x\\"}),
    (b'{"a": "\\\\\\",]",}', {"a": '\\",]'}),
    (b'{"a,}": [",]",],}', {"a,}": [",]"]}),
    (b'{"a": "\xc3\xa9,]",}', {"a": "\u00e9,]"}),
], ids=repr)
def test_commas_inside_strings_are_untouched(raw, expected):
    assert parse_body(raw) == expected


@pytest.mark.parametrize("raw", [
    b'{"a": 1',
    b'{"a": }',
    b'{"a": 1,,}',
    b'{"a" 1}',
    b"{'a': 1}",
    b'{"a": [1,,2]}',
    b'{"a": undefined}',
    b'{"a": 1} x',
    b'{"a": "unterminated}',
    b"not json at all",
    b'{"a": 1,}}',
], ids=repr)
def test_invalid_json_is_a_400_invalid_json(raw):
    with pytest.raises(BadRequestError) as info:
        parse_body(raw)
    err = info.value
    assert err.status == 400
    assert err.code == "invalid_json"
    assert err.type == "invalid_request_error"
    assert err.body()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\r\t ", None], ids=repr)
def test_empty_body_is_a_400(raw):
    with pytest.raises(BadRequestError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.code == "invalid_json"
    assert "empty" in info.value.message


@pytest.mark.parametrize("raw", [
    b"[]", b'[{"a": 1}]', b"[1, 2,]", b"1", b"1.5", b'"a string"', b"null", b"true",
], ids=repr)
def test_json_that_is_not_an_object_is_a_400(raw):
    with pytest.raises(BadRequestError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.code == "invalid_json"
    assert "object" in info.value.message


@pytest.mark.parametrize("raw", [
    b"\xff\xfe{}",
    b'{"a": "\xff"}',
    b'{"a": "\xc3"}',            # truncated two-byte sequence
    b'{"a": "\xed\xa0\x80"}',    # UTF-8-encoded surrogate
    b'{"a": "caf\xe9",}',        # Latin-1, with a trailing comma
    "{\"a\": 1}".encode("utf-16"),
], ids=repr)
def test_non_utf8_bytes_are_a_400(raw):
    with pytest.raises(BadRequestError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.code == "invalid_json"


def test_parse_error_message_says_what_to_send():
    with pytest.raises(BadRequestError) as info:
        parse_body(b'{"a": ')
    assert "JSON" in info.value.message
    assert info.value.param is None


def test_unicode_and_numbers_survive_the_tolerant_path():
    raw = '{"t": "héllo 🌍 日本", "n": 1e3, "i": -7, "z": null, "b": false,}'.encode()
    assert parse_body(raw) == {"t": "héllo 🌍 日本", "n": 1000.0, "i": -7, "z": None, "b": False}


# ---- cost of the repair (#11 item 10) and depth (#11 item 11) ----------------------------------

def python_steps(fn, *args):
    """Python bytecode instructions run by fn(*args): the work done in Python, counted (a C-level
    pass over the body counts as one call however long the body is). Exceptions are swallowed."""
    import sys
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return tracer
    sys.settrace(tracer)
    try:
        fn(*args)
    except BadRequestError:
        pass
    finally:
        sys.settrace(None)
    return count


def chat_body(content_bytes, tail=b'"},],}'):
    return b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * content_bytes + tail


def test_repair_work_does_not_grow_with_the_body_size():
    """A 30 MB body once cost 1.6 s of CPU in a Python loop per byte; the Python work of a repair
    now depends on the number of trailing commas, not on the size."""
    small = python_steps(parse_body, chat_body(16 * 1024))
    large = python_steps(parse_body, chat_body(128 * 1024))
    assert parse_body(chat_body(128 * 1024))["messages"][0]["content"] == "x" * 128 * 1024
    assert large <= small * 1.1


def test_repair_work_is_linear_in_the_number_of_trailing_commas():
    def body(n):
        return b'{"a": [' + b"[1, 2,]," * n + b"1],}"
    one, four = python_steps(parse_body, body(1000)), python_steps(parse_body, body(4000))
    assert parse_body(body(4000))["a"] == [[1, 2]] * 4000 + [1]
    assert four <= 4.4 * one


def test_no_repair_unless_the_error_is_a_trailing_comma():
    """Only orjson's "trailing comma" error can be repaired; any other error is a 400 at once."""
    def broken(n):
        return chat_body(n, tail=b'"} "oops"]}')
    assert python_steps(parse_body, broken(128 * 1024)) <= python_steps(parse_body, broken(1024)) * 1.1
    with pytest.raises(BadRequestError, match="expected"):
        parse_body(broken(1024))


def test_trailing_commas_are_forgiven_only_in_bodies_up_to_the_repair_limit():
    from gateway.api.body import REPAIR_MAX_BYTES
    fits = chat_body(REPAIR_MAX_BYTES - 100)
    assert len(fits) <= REPAIR_MAX_BYTES and parse_body(fits)["model"] == "m"
    too_big = chat_body(REPAIR_MAX_BYTES)
    with pytest.raises(BadRequestError) as info:
        parse_body(too_big)
    assert info.value.code == "invalid_json" and str(REPAIR_MAX_BYTES) in info.value.message
    assert "trailing comma" in info.value.message
    assert parse_body(chat_body(REPAIR_MAX_BYTES, tail=b'"}]}'))["model"] == "m"  # valid JSON: any size


def old_repair(raw):
    """The repair as it was (a loop per byte): the reference its replacement must agree with."""
    out, in_string, escaped, pending, last = bytearray(), False, False, -1, 0
    for byte in raw:
        if in_string:
            out.append(byte)
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
            continue
        if byte in b" \t\r\n":
            out.append(byte)
            continue
        if byte in (0x5D, 0x7D) and pending >= 0:
            del out[pending]
        pending = -1
        if byte == 0x2C and last not in (0, 0x2C, 0x5B, 0x7B):
            pending = len(out)
        elif byte == 0x22:
            in_string = True
        last = byte
        out.append(byte)
    return bytes(out)


def test_the_repair_agrees_with_the_per_byte_reference_on_random_input():
    import random

    import orjson

    from gateway.api.body import strip_trailing_commas

    def outcome(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "invalid"
    rng = random.Random(11)
    alphabet = b'[]{}," \\a1:\n'
    for _ in range(20000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        assert outcome(strip_trailing_commas(raw)) == outcome(old_repair(raw)), raw


def nested(depth):
    """A body whose deepest list is at `depth` levels (the body object is level 1)."""
    return b'{"a": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [101, 255, 300, 1024, 1025, 5000])
def test_deep_nesting_is_a_400(depth):
    with pytest.raises(BadRequestError) as info:
        parse_body(nested(depth))
    assert info.value.status == 400 and info.value.code == "invalid_json"
    assert "nested more than 100 levels" in info.value.message


def test_nesting_up_to_the_limit_and_wide_bodies_are_fine():
    from gateway.api.body import MAX_DEPTH
    assert MAX_DEPTH == 100
    assert parse_body(nested(100))["a"]
    assert len(parse_body(b'{"a": [' + b"[[1]]," * 5000 + b"[]]}")["a"]) == 5001  # wide, not deep
    assert parse_body(b'{"a": "' + b"[" * 500 + b'"}')["a"] == "[" * 500  # brackets in a string
    with pytest.raises(BadRequestError, match="nested"):
        parse_body(b'{"a": [' + b"[[1]]," * 200 + nested(120)[1:-1].split(b": ", 1)[1] + b",]}")
