"""multipart/form-data parsing with limits (gateway/wire/multipart.py): what a client can send, what
it cannot, and that hostile bodies are refused fast."""

import time

import pytest

from gateway import errors
from gateway.wire.multipart import MAX_PARTS
from gateway.wire.multipart import Upload
from gateway.wire.multipart import encode_form
from gateway.wire.multipart import parse_form

LIMIT = 1_000_000


def part(boundary, name, value, filename=None, extra=""):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + value + b"\r\n"


def test_a_form_round_trips_with_repeated_fields_and_a_file():
    content_type, body = encode_form({"model": "whisper-1", "timestamp_granularities": ["word", "segment"]},
                                     {"file": Upload("talk.wav", "audio/wav", b"RIFF" + bytes(5000))})
    fields, files = parse_form(body, content_type, LIMIT)
    assert fields == {"model": "whisper-1", "timestamp_granularities": ["word", "segment"]}
    assert files["file"] == Upload("talk.wav", "audio/wav", b"RIFF" + bytes(5000))


def test_encoding_never_lets_a_name_break_out_of_its_header():
    content_type, body = encode_form({'a"\r\nX-Injected: 1': "v"}, {"file": Upload('x"\r\n.wav', 'a\r\nb', b"")})
    assert b"\r\nX-Injected" not in body and b'x"' not in body
    fields, files = parse_form(body, content_type, LIMIT)
    assert list(fields) == ['a___X-Injected: 1'] and files["file"].filename == "x___.wav"


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "a" * 71,
    "multipart/form-data; boundary=bad\u00e9", "multipart/form-data; boundary=ends-with-space ",
    "application/json", None])
def test_a_missing_or_malformed_boundary_is_a_400_before_parsing(content_type):
    with pytest.raises(errors.BadRequestError) as caught:
        parse_form(part("b", "model", b"x") + b"--b--\r\n", content_type, LIMIT)
    assert caught.value.status == 400


@pytest.mark.parametrize("body,status", [
    (part("b", "model", b"x"), 400),                                   # no closing boundary
    (b"--b\r\nno headers here\r\n\r\n--b--\r\n", 400),                 # no Content-Disposition
    (b"".join(part("b", f"f{i}", b"v") for i in range(MAX_PARTS + 2)) + b"--b--\r\n", 413),
    (part("b", "model", b"x" * 70_000) + b"--b--\r\n", 413),          # a text field over 64 KB
    (part("b", "file", bytes(LIMIT + 1), filename="a.wav") + b"--b--\r\n", 413),
    (part("b", "model", b"\xff\xfe") + b"--b--\r\n", 400),             # not UTF-8
    (b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\nX: " + b"a" * 20_000 + b"\r\n\r\nv\r\n--b--\r\n", 413),
])
def test_bad_bodies_are_refused(body, status):
    with pytest.raises(errors.GatewayError) as caught:
        parse_form(body, "multipart/form-data; boundary=b", LIMIT)
    assert caught.value.status == status


@pytest.mark.parametrize("filler", [b"\r\n", b"\r", b"-", b"--b\r"])
def test_hostile_bodies_of_megabytes_are_refused_in_linear_time(filler):
    body = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + filler * (8_000_000 // len(filler))
    started = time.process_time()
    with pytest.raises(errors.GatewayError):
        parse_form(body, "multipart/form-data; boundary=b", 4_000_000)
    assert time.process_time() - started < 5  # a loose bound: quadratic parsing would take minutes
