"""One HTTP call's decoding and stream life cycle (gateway.wire.upstream), over fake response objects."""

import orjson
import pytest
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError

from gateway import errors
from gateway.providers.base import Provider
from gateway.providers.openai import OpenAIProvider
from gateway.config.settings import DeploymentConfig
from gateway.wire.upstream import READ_SIZE
from gateway.wire.upstream import CallContext
from gateway.wire.upstream import ChunkStream
from gateway.wire.upstream import http_call
from gateway.wire.upstream import load_json
from gateway.wire.upstream import ndjson_lines
from gateway.wire.upstream import sse_events
from gateway.wire.upstream import translated_chunks


class FakeResponse:
    """A urllib3-like streamed response whose read1() hands out the body in chosen pieces."""

    def __init__(self, pieces, data=None, drain_error=None, headers=None):
        self.pieces = list(pieces)
        self.data = data
        self.headers = HTTPHeaderDict(headers or {"Content-Type": "text/event-stream"})
        self.drain_error = drain_error
        self.reads = []
        self.calls = []

    def read1(self, amt):
        self.reads.append(amt)
        return self.pieces.pop(0) if self.pieces else b""

    def read(self):
        return b"".join(self.pieces) if self.data is None else self.data

    def close(self):
        self.calls.append("close")

    def drain_conn(self):
        self.calls.append("drain_conn")
        if self.drain_error is not None:
            raise self.drain_error

    def release_conn(self):
        self.calls.append("release_conn")


def byte_by_byte(body):
    return [body[i:i + 1] for i in range(len(body))]


def split_at(body, *offsets):
    bounds = sorted({0, len(body), *(o for o in offsets if 0 < o < len(body))})
    return [body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def chunkings(body):
    """The same body delivered whole, a byte at a time, in threes, and split mid-line."""
    mid = len(body) // 2
    return {
        "whole": [body],
        "bytes": byte_by_byte(body),
        "threes": [body[i:i + 3] for i in range(0, len(body), 3)],
        "halves": split_at(body, mid),
        "odd": split_at(body, 1, 7, mid, mid + 1, len(body) - 1),
    }


class StubProvider(Provider):
    """A provider whose stream translator is a plain function set per test."""

    name = "stub"

    def __init__(self, translate=None):
        config = DeploymentConfig(model_name="my-group", params={"model": "stub/model-x"}, model_info={}, index=0)
        super().__init__(config, "model-x")
        self.api_base = "http://upstream.test:8000/v1"
        self.translate = translate or (lambda data: [orjson.loads(data)])

    def parse_stream_event(self, endpoint, data, state):
        return self.translate(data)


LABEL = "my-group -> stub/model-x at http://upstream.test:8000/v1"


# --- sse_events ------------------------------------------------------------------------------------

SSE_BODY = (
    b'data: {"id":"1","choices":[{"delta":{"content":"h\xc3\xa9llo \xe2\x9c\x93"}}]}\n\n'
    b": keep-alive comment\n\n"
    b'event: message\ndata: {"id":"2"}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"data:no-space\r\rdata: [DONE]\n\n"
)
SSE_EVENTS = [
    '{"id":"1","choices":[{"delta":{"content":"héllo ✓"}}]}'.encode(),
    b'{"id":"2"}',
    b"line one\nline two",
    b"no-space",
    b"[DONE]",
]


@pytest.mark.parametrize("how", ["whole", "bytes", "threes", "halves", "odd"])
def test_sse_events_any_chunking(how):
    resp = FakeResponse(chunkings(SSE_BODY)[how])
    assert list(sse_events(resp)) == SSE_EVENTS
    assert all(amt == READ_SIZE for amt in resp.reads)


@pytest.mark.parametrize("tail", [b"data: tail", b"data: tail\n", b"data: tail\r"])
def test_sse_unterminated_last_event_is_dropped(tail):
    """Per the SSE spec, an event without its blank line at end of stream is not dispatched."""
    body = b'data: {"a":1}\n\n' + tail
    for pieces in chunkings(body).values():
        assert list(sse_events(FakeResponse(pieces))) == [b'{"a":1}']


def test_sse_events_empty_body():
    assert list(sse_events(FakeResponse([]))) == []


# --- ndjson_lines ------------------------------------------------------------------------------------

NDJSON_BODY = (b'{"model":"m","response":"h\xc3\xa9","done":false}\n'
               b"\n"
               b'{"response":" there","done":false}\r\n'
               b"   \n"
               b'{"done":true,"eval_count":3}')   # last line without newline
NDJSON_OBJECTS = [{"model": "m", "response": "hé", "done": False},
                  {"response": " there", "done": False},
                  {"done": True, "eval_count": 3}]


@pytest.mark.parametrize("how", ["whole", "bytes", "threes", "halves", "odd"])
def test_ndjson_lines_any_chunking(how):
    lines = list(ndjson_lines(FakeResponse(chunkings(NDJSON_BODY)[how])))
    assert [orjson.loads(line) for line in lines] == NDJSON_OBJECTS


@pytest.mark.parametrize("body, count", [(b"", 0), (b"\n\n", 0), (b"{}\n", 1), (b"{}", 1), (b"{}\n{}\n", 2)])
def test_ndjson_line_counts(body, count):
    for pieces in chunkings(body).values() if body else [[]]:
        assert len(list(ndjson_lines(FakeResponse(pieces)))) == count


# --- translated_chunks -------------------------------------------------------------------------------

def events_then(items, exc):
    yield from items
    raise exc


def test_translated_chunks_translates_and_stops_on_none():
    seen = []

    def translate(data):
        seen.append(data)
        return None if data == b"[DONE]" else [{"n": int(data)}, {"n": -int(data)}]

    provider = StubProvider(translate)
    events = iter([b"1", b"2", b"[DONE]", b"3"])
    assert list(translated_chunks(provider, "chat", events, {}, 5)) == [{"n": 1}, {"n": -1}, {"n": 2}, {"n": -2}]
    assert seen == [b"1", b"2", b"[DONE]"]
    assert next(events) == b"3"  # nothing read after the end marker


@pytest.mark.parametrize("exc, cls, status, words", [
    (ReadTimeoutError(None, "/v1/chat/completions", "Read timed out."), errors.UpstreamTimeoutError, 504,
     "stalled for 7.5s"),
    (ProtocolError("Connection broken: IncompleteRead(0 bytes read)", ConnectionResetError(104, "reset")),
     errors.UpstreamConnectionError, 502, "ProtocolError"),
    (ConnectionResetError(104, "Connection reset by peer"), errors.UpstreamConnectionError, 502,
     "ConnectionResetError"),
])
def test_translated_chunks_maps_io_errors(exc, cls, status, words):
    provider = StubProvider()
    stream = translated_chunks(provider, "chat", events_then([b'{"a":1}'], exc), {}, 7.5)
    assert next(stream) == {"a": 1}
    with pytest.raises(cls) as info:
        next(stream)
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert LABEL in err.message and words in err.message
    assert err.__cause__ is exc


@pytest.mark.parametrize("translate, data", [
    (lambda data: [data["choices"]], b"{}"),                                   # TypeError
    (lambda data: [orjson.loads(data)["missing"]], b"{}"),                     # KeyError
    (lambda data: [orjson.loads(data)["list"][5]], b'{"list": []}'),           # IndexError
    (lambda data: [orjson.loads(data).nope], b"{}"),                           # AttributeError
    (lambda data: [orjson.loads(data)], b"{not json"),                         # orjson.JSONDecodeError
    (lambda data: [int(orjson.loads(data)["n"])], b'{"n": "twelve"}'),         # ValueError
    (lambda data: [data.decode("utf-8")], b"caf\xe9"),                         # UnicodeDecodeError
], ids=["TypeError", "KeyError", "IndexError", "AttributeError", "JSONDecodeError", "ValueError",
        "UnicodeDecodeError"])
def test_translated_chunks_unreadable_event_is_upstream_error(translate, data):
    provider = StubProvider(translate)
    with pytest.raises(errors.UpstreamError) as info:
        list(translated_chunks(provider, "chat", iter([data]), {}, 5))
    assert type(info.value) is errors.UpstreamError
    assert info.value.status == 502
    assert LABEL in info.value.message


# --- ChunkStream.close ------------------------------------------------------------------------------

def make_stream(resp, items=(1, 2, 3), on_close=None):
    return ChunkStream(StubProvider(), "chat", iter(items), resp, on_close=on_close)


def test_close_unfinished_stream_cuts_connection():
    resp = FakeResponse([])
    stream = make_stream(resp)
    it = iter(stream)
    assert next(it) == 1
    stream.close()
    assert resp.calls == ["close"]
    assert stream.finished is False


def test_close_never_started_stream_cuts_connection():
    resp = FakeResponse([])
    make_stream(resp).close()
    assert resp.calls == ["close"]


def test_close_finished_stream_drains_and_releases():
    resp = FakeResponse([])
    stream = make_stream(resp)
    assert list(stream) == [1, 2, 3]
    assert stream.finished is True
    stream.close()
    assert resp.calls == ["drain_conn", "release_conn"]


@pytest.mark.parametrize("error", [ProtocolError("broken"), OSError("gone")])
def test_close_finished_stream_drain_failure_closes(error):
    resp = FakeResponse([], drain_error=error)
    stream = make_stream(resp)
    list(stream)
    stream.close()
    assert resp.calls == ["drain_conn", "close"]


def test_close_is_idempotent_and_calls_on_close_once():
    resp, closed = FakeResponse([]), []
    stream = make_stream(resp, on_close=lambda: closed.append(1))
    list(stream)
    stream.close()
    stream.close()
    assert resp.calls == ["drain_conn", "release_conn"]
    assert closed == [1]


def test_close_without_response():
    closed = []
    stream = ChunkStream(StubProvider(), "chat", iter([1]), on_close=lambda: closed.append(1))
    stream.close()
    assert closed == [1]


def test_map_shares_close_finished():
    resp = FakeResponse([])
    inner = make_stream(resp)
    outer = inner.map(lambda c: c * 10)
    assert outer.provider is inner.provider and outer.endpoint == "chat"
    assert list(outer) == [10, 20, 30]
    outer.close()
    assert resp.calls == ["drain_conn", "release_conn"]


def test_map_shares_close_unfinished():
    resp = FakeResponse([])
    inner = make_stream(resp)
    outer = inner.map(lambda c: c * 10).map(str)
    it = iter(outer)
    assert next(it) == "10"
    outer.close()
    assert resp.calls == ["close"]


# --- load_json ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [(b'{"a": 1}', {"a": 1}), (b"[1, 2]", [1, 2]), (b" {} ", {})])
def test_load_json(raw, expected):
    assert load_json(StubProvider(), raw) == expected


@pytest.mark.parametrize("raw, words", [
    (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
    (b"", "not JSON"),
    (b'{"a": 1', "not JSON"),
    (b'"just a string"', "unexpected body"),
    (b"42", "unexpected body"),
    (b"null", "unexpected body"),
])
def test_load_json_refuses(raw, words):
    with pytest.raises(errors.UpstreamError) as info:
        load_json(StubProvider(), raw)
    assert info.value.status == 502
    assert words in info.value.message and LABEL in info.value.message


# --- http_call end to end with a fake transport ---------------------------------------------------------

class FakeTransport:
    def __init__(self, resp):
        self.resp = resp
        self.sent = []

    def send(self, provider, req, timeout, stream):
        self.sent.append((req, timeout, stream))
        return self.resp


def openai_provider():
    config = DeploymentConfig(model_name="g", params={"model": "openai/gpt-4o-mini", "api_key": "sk-test-123",
                                                      "api_base": "http://fake.test/v1"},
                              model_info={}, index=0)
    return OpenAIProvider(config, "gpt-4o-mini")


def test_http_call_stream_byte_by_byte():
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "é"}}]}
    body = b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    resp = FakeResponse(byte_by_byte(body))
    transport = FakeTransport(resp)
    stream = http_call(openai_provider(), CallContext(transport, 12.0), "chat",
                       {"messages": [{"role": "user", "content": "hi"}], "stream": True}, True)
    assert list(stream) == [chunk, chunk]
    stream.close()
    assert resp.calls == ["drain_conn", "release_conn"]
    req, timeout, streamed = transport.sent[0]
    assert (req.url, timeout, streamed) == ("http://fake.test/v1/chat/completions", 12.0, True)
    assert orjson.loads(req.body)["model"] == "gpt-4o-mini"


def test_http_call_stream_cut_midway_is_connection_error():
    body = b'data: {"id":"c","choices":[]}\n\ndata: {"id":'
    resp = FakeResponse(split_at(body, 10, 40))
    pieces = iter(resp.pieces)

    def read1(amt):
        piece = next(pieces, None)
        if piece is None:
            raise ProtocolError("Connection broken: IncompleteRead", None)
        return piece

    resp.read1 = read1
    stream = http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat",
                       {"messages": [], "stream": True}, True)
    it = iter(stream)
    assert next(it) == {"id": "c", "choices": []}
    with pytest.raises(errors.UpstreamConnectionError):
        next(it)
    stream.close()
    assert resp.calls == ["close"]


@pytest.mark.parametrize("data", [b"<html>oops</html>", b"[]"])
def test_http_call_unreadable_answer_is_502(data):
    resp = FakeResponse([], data=data)
    provider = openai_provider()
    provider.parse_response = lambda endpoint, parsed, body: parsed["choices"]  # TypeError on a list
    with pytest.raises(errors.UpstreamError) as info:
        http_call(provider, CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, False)
    assert info.value.status == 502 and "g -> openai/gpt-4o-mini" in info.value.message


# --- an error inside a 2xx answer (issue #11 item 8) -------------------------------------------------

ERROR_BODY = orjson.dumps({"error": {"message": "The model crashed.", "type": "server_error", "code": None}})


def test_http_call_200_with_error_body_is_the_upstream_error():
    resp = FakeResponse([], data=ERROR_BODY, headers={"Content-Type": "application/json"})
    with pytest.raises(errors.UpstreamError) as info:
        http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, False)
    err = info.value
    assert type(err) is errors.UpstreamError and err.status == 502 and err.upstream_status == 200
    assert "The model crashed." in err.message and "g -> openai/gpt-4o-mini" in err.message


@pytest.mark.parametrize("code, cls, status", [
    (429, errors.RateLimitError, 429), ("503", errors.UpstreamError, 503), ("rate_limit", errors.UpstreamError, 502),
    (True, errors.UpstreamError, 502),
])
def test_http_call_error_body_code_gives_the_kind_of_failure(code, cls, status):
    body = orjson.dumps({"error": {"message": "busy", "code": code}})
    resp = FakeResponse([], data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(cls) as info:
        http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, False)
    assert info.value.status == status and "busy" in info.value.message


@pytest.mark.parametrize("body", [{"error": None, "choices": []}, {"error": "", "choices": []}, {"choices": []}])
def test_http_call_empty_error_field_is_no_error(body):
    resp = FakeResponse([], data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, False) == body


def test_http_call_stream_answered_with_a_json_error():
    resp = FakeResponse([ERROR_BODY], headers={"Content-Type": "application/json; charset=utf-8"})
    with pytest.raises(errors.UpstreamError) as info:
        http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, True)
    assert "The model crashed." in info.value.message
    assert resp.calls == ["close"]


def test_http_call_stream_answered_with_json_that_is_no_error():
    resp = FakeResponse([b'{"id": "x", "choices": []}'], headers={"Content-Type": "application/json"})
    with pytest.raises(errors.UpstreamError, match="JSON body, not a stream"):
        http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, True)


def test_error_in_a_2xx_answer_on_the_providers_own_paths():
    from gateway import providers
    from gateway.providers import aws

    def make(model, **params):
        return providers.build(DeploymentConfig(model_name="g", params={"model": model, **params},
                                                model_info={}, index=0))

    sagemaker = make("sagemaker/e", aws_access_key_id="AKIA0", aws_secret_access_key="s", aws_region_name="us-east-1")
    with pytest.raises(errors.UpstreamError, match="CUDA out of memory"):
        aws.json_body(sagemaker, b'{"error": "CUDA out of memory", "error_type": "generation"}')
    assert aws.json_body(sagemaker, b'[{"generated_text": "ok"}]') == [{"generated_text": "ok"}]
    ai21 = make("ai21/jamba-large", api_key="k")
    state = ai21.new_stream_state("chat", {"messages": []})
    with pytest.raises(errors.UpstreamError, match="Internal server error"):
        ai21.parse_stream_event("chat", b'{"detail": "Internal server error"}', state)


def test_http_call_sse_mislabelled_as_json_is_still_read():
    body = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    resp = FakeResponse([body], headers={"Content-Type": "application/json"})
    stream = http_call(openai_provider(), CallContext(FakeTransport(resp), 5.0), "chat", {"messages": []}, True)
    assert [c["id"] for c in stream] == ["c"]
