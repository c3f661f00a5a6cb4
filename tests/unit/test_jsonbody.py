"""parse_body: strict JSON first, trailing commas forgiven, everything else a 400 invalid_json."""

import pytest

from gateway.errors import BadRequestError
from gateway.jsonbody import parse_body


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
