"""SSEDecoder survives any network chunking; encode() writes one `data:` event."""

import random

import orjson
import pytest

from gateway.wire.sse import DONE_EVENT
from gateway.wire.sse import Event
from gateway.wire.sse import SSEDecoder
from gateway.wire.sse import encode

TEXT = "héllo 🌍 日本"

SAMPLE = (
    b": keep-alive\n"
    b"\n"
    b'data: {"id": 1}\n'
    b"\n"
    b"event: ping\r\n"
    b"data: first\r\n"
    b"data: second\r\n"
    b"\r\n"
    + f"data: {TEXT}\r".encode()
    + b"\r"
    b"data:no-space\n"
    b": comment in the middle\n"
    b"data:  two spaces\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
SAMPLE_EVENTS = [
    Event(None, b'{"id": 1}'),
    Event("ping", b"first\nsecond"),
    Event(None, TEXT.encode()),
    Event(None, b"no-space\n two spaces"),
    Event(None, b"[DONE]"),
]


def decode_chunks(chunks):
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def test_sample_in_one_chunk():
    assert decode_chunks([SAMPLE]) == SAMPLE_EVENTS


def test_sample_one_byte_at_a_time():
    assert decode_chunks([SAMPLE[i:i + 1] for i in range(len(SAMPLE))]) == SAMPLE_EVENTS


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_sample_split_in_two_at_every_byte(cut):
    assert decode_chunks([SAMPLE[:cut], SAMPLE[cut:]]) == SAMPLE_EVENTS


@pytest.mark.parametrize("seed", range(20))
def test_sample_in_random_chunks_with_empty_ones(seed):
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(SAMPLE):
        n = rng.randint(0, 7)
        chunks.append(SAMPLE[i:i + n])
        i += n
    assert decode_chunks(chunks) == SAMPLE_EVENTS


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_every_line_ending_style(ending):
    stream = ending.join([b"event: a", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    assert decode_chunks([stream]) == [Event("a", b"1\n2"), Event(None, b"3")]
    assert decode_chunks([bytes([b]) for b in stream]) == [Event("a", b"1\n2"), Event(None, b"3")]


def test_crlf_split_across_chunks_is_one_line_ending():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [Event(None, b"a\nb")]
    assert decoder.close() == []


def test_crlf_split_does_not_dispatch_an_event_early():
    # "data: a" CR | LF "data: b" CRLF CRLF: an extra empty line after "a" would split the event.
    events = decode_chunks([b"data: a\r", b"\ndata: b\r\n\r\n"])
    assert events == [Event(None, b"a\nb")]


def test_cr_only_stream_split_between_the_two_crs():
    events = decode_chunks([b"data: a\r", b"\rdata: b\r", b"\r"])
    assert events == [Event(None, b"a"), Event(None, b"b")]


def test_events_are_returned_by_the_feed_that_completes_them():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2\n") == [Event(None, b"1")]
    assert decoder.feed(b"\n") == [Event(None, b"2")]


def test_comments_and_blank_lines_alone_yield_nothing():
    assert decode_chunks([b": keep-alive\n\n:\n\n\n\n: x\r\n\r\n"]) == []


def test_event_name_resets_after_dispatch():
    events = decode_chunks([b"event: delta\ndata: 1\n\ndata: 2\n\n"])
    assert events == [Event("delta", b"1"), Event(None, b"2")]


def test_event_without_data_is_not_dispatched():
    assert decode_chunks([b"event: ping\n\ndata: x\n\n"]) == [Event(None, b"x")]


def test_unknown_fields_are_ignored():
    assert decode_chunks([b"id: 7\nretry: 100\nfoo: bar\ndata: x\n\n"]) == [Event(None, b"x")]


def test_data_keeps_colons_and_only_one_leading_space_is_removed():
    events = decode_chunks([b'data: {"a": "b:c"}\ndata:   x\n\n'])
    assert events == [Event(None, b'{"a": "b:c"}\n  x')]


def test_data_field_without_colon_is_an_empty_data_line():
    assert decode_chunks([b"data\ndata: x\n\n"]) == [Event(None, b"\nx")]


MULTIBYTE = f"data: {TEXT}\n\ndata: {{\"t\": \"{TEXT}\"}}\n\n".encode()


@pytest.mark.parametrize("cut", range(len(MULTIBYTE) + 1))
def test_multibyte_utf8_split_at_every_byte(cut):
    events = decode_chunks([MULTIBYTE[:cut], MULTIBYTE[cut:]])
    assert [e.data.decode("utf-8") for e in events] == [TEXT, f'{{"t": "{TEXT}"}}']
    assert orjson.loads(events[1].data) == {"t": TEXT}


def test_multibyte_utf8_one_byte_at_a_time():
    events = decode_chunks([bytes([b]) for b in MULTIBYTE])
    assert events[0].data.decode("utf-8") == TEXT


def test_multibyte_event_name():
    assert decode_chunks([b"event: \xc3\xa9v\n", b"data: x\n\n"]) == [Event("\u00e9v", b"x")]


def test_close_flushes_a_held_cr_that_ends_the_event():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == []  # the last CR could still be half of a CRLF
    assert decoder.close() == [Event(None, b"a")]


def test_close_drops_an_event_without_its_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: done\n\ndata: partial\n") == [Event(None, b"done")]
    assert decoder.close() == []


def test_close_drops_an_unterminated_line():
    decoder = SSEDecoder()
    decoder.feed(b"data: partial")
    assert decoder.close() == []


def test_close_on_a_fresh_decoder_and_twice():
    decoder = SSEDecoder()
    assert decoder.close() == []
    decoder.feed(b"data: a\n\r")
    assert decoder.close() == [Event(None, b"a")]
    assert decoder.close() == []


@pytest.mark.parametrize("obj", [
    {"id": "chatcmpl-1", "choices": [{"delta": {"content": TEXT}}]},
    {"error": {"message": "line1\nline2", "type": "x", "param": None, "code": None}},
    {},
])
def test_encode_is_one_data_event_that_decodes_back(obj):
    out = encode(obj)
    assert out.startswith(b"data: ")
    assert out.endswith(b"\n\n")
    assert out.count(b"\n") == 2  # newlines inside strings are escaped by JSON
    events = decode_chunks([out])
    assert len(events) == 1
    assert orjson.loads(events[0].data) == obj


def test_encode_exact_bytes():
    assert encode({"a": 1, "b": "é"}) == b'data: {"a":1,"b":"\xc3\xa9"}\n\n'


def test_done_event():
    assert DONE_EVENT == b"data: [DONE]\n\n"
    assert decode_chunks([DONE_EVENT]) == [Event(None, b"[DONE]")]
