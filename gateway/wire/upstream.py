"""One call against one deployment over HTTP: send, decode (JSON, SSE, NDJSON), translate.

The provider's `execute` (providers.base) prepares the body and builds the request; http_call sends
it and reads the answer with the provider's pure halves (parse_response, or map_error for an
answer outside 2xx: the transport never calls the provider). A provider whose call is more than one
exchange gets HttpIO here (or wire.sdk.SdkIO) in its named I/O hook, as its only way to the network:
every I/O failure is mapped in wire/.
"""

from dataclasses import dataclass

import orjson
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway import errors
from gateway.wire.sse import SSEDecoder
from gateway.wire.transport import ErrorAnswer
from gateway.wire.stream import ChunkStream

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a provider needs to run a call: the worker's transport and the call's limits."""

    transport: object
    timeout: float
    drop_params: bool = False


class HttpIO:
    """A provider hook's way to send its own HTTP requests (Replicate's polls): through the call's
    transport, a non-2xx answer raised as the provider's error, any I/O failure as the mapped one."""

    __slots__ = ("provider", "transport", "timeout", "drop_params")

    def __init__(self, provider, ctx):
        self.provider = provider
        self.transport = ctx.transport
        self.timeout = ctx.timeout
        self.drop_params = ctx.drop_params

    def send(self, req, timeout, stream=False):
        """The 2xx response to `req` (a stream must be closed or released by the caller)."""
        try:
            return self.transport.send(self.provider, req, timeout=timeout, stream=stream)
        except ErrorAnswer as answer:
            raise self.provider.map_error(answer.status, answer.raw, answer.headers) from None


def read_raw(resp):
    """Yield bytes as they arrive, without waiting to fill a buffer."""
    while True:
        data = resp.read1(READ_SIZE)
        if not data:
            return
        yield data


class Backlog:
    """How many events of the upstream's last read are still to be taken: while some are, the next
    chunk needs no I/O, so the client's write can wait for it (wire/stream.py ChunkStream.ready)."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


def sse_events(resp, backlog=None):
    """The `data` of each SSE event of a response body; `backlog` counts the ones already read."""
    decoder = SSEDecoder()
    backlog = backlog if backlog is not None else Backlog()
    for raw in read_raw(resp):
        events = decoder.feed(raw)
        backlog.n = len(events)
        for event in events:
            backlog.n -= 1
            yield event.data
    for event in decoder.close():
        yield event.data


def ndjson_lines(resp, backlog=None):
    """Each non-empty line of a newline-delimited JSON body; `backlog` counts the ones already read."""
    buffer = b""
    backlog = backlog if backlog is not None else Backlog()
    for raw in read_raw(resp):
        buffer += raw
        *lines, buffer = buffer.split(b"\n")
        lines = [line for line in lines if line.strip()]
        backlog.n = len(lines)
        for line in lines:
            backlog.n -= 1
            yield line
    if buffer.strip():
        yield buffer


def incomplete_stream(provider):
    """The error for an upstream stream whose body ended before the provider's end marker: a cut
    connection, never a complete answer (it would be cached and billed as one)."""
    return errors.UpstreamError(
        f"Upstream stream ended before completion: the connection closed without the provider's "
        f"end-of-stream marker (deployment: {provider.label})", code="upstream_stream_incomplete")


def translated_chunks(provider, endpoint, events, state, timeout):
    """Run each upstream event through the provider's translator; map I/O errors once, here.

    The stream is complete when the translator returns None (an end marker such as `[DONE]`) or
    the provider's `stream_ended(state)` says its terminal event was seen; a body that just ends
    before that raises incomplete_stream()."""
    try:
        for data in events:
            chunks = provider.parse_stream_event(endpoint, data, state)
            if chunks is None:
                return
            yield from chunks
    except (Urllib3Error, OSError) as exc:
        raise stream_io_error(provider, exc, timeout) from exc
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise errors.UpstreamError(
            f"Upstream sent a stream event this gateway cannot read (deployment: {provider.label})") from exc
    if not provider.stream_ended(state):
        raise incomplete_stream(provider)


def load_json(provider, raw):
    """An upstream JSON answer body, or a 502 naming the deployment."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamError(
            f"Upstream answered with a body that is not JSON (deployment: {provider.label})") from exc
    if not isinstance(data, (dict, list)):
        raise errors.UpstreamError(f"Upstream answered with an unexpected body (deployment: {provider.label})")
    return data


def answer_error(provider, data, raw, headers):
    """The error an upstream's 2xx answer carries in its body (`{"error": ...}`), as the provider's
    map_error reads it (message kept), or None. Some OpenAI-compatible servers and proxies answer a
    failure with HTTP 200: passed on, it would be billed as a success and cached."""
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if not err:
        return None
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    # The body's own HTTP-like code (Google's `code: 429`, OpenRouter's) says what kind of failure it
    # is; otherwise the 200 maps to a 502 upstream error.
    status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599 else 200
    return provider.map_error(status, raw, headers)


def json_instead_of_stream(provider, raw, headers):
    """A stream request answered with one JSON body (`Content-Type: application/json`): the error it
    carries, or a 502 saying so; None when the body is not JSON after all (then it is read as SSE)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return answer_error(provider, data, raw, headers) or errors.UpstreamError(
        f"Upstream answered a stream request with a JSON body, not a stream (deployment: {provider.label})")


def _events_of(raw):
    decoder = SSEDecoder()
    for event in decoder.feed(raw):
        yield event.data
    for event in decoder.close():
        yield event.data


def stream_io_error(provider, exc, timeout):
    """The gateway's error for an I/O failure in the middle of an upstream's stream."""
    if isinstance(exc, Urllib3Timeout):
        return errors.UpstreamTimeoutError(f"Upstream stream stalled for {timeout:g}s (deployment: {provider.label})")
    return errors.UpstreamConnectionError(
        f"Upstream stream broke (deployment: {provider.label}): {type(exc).__name__}")


def raw_chunks(provider, resp, timeout):
    """The bytes of a response body as they arrive (speech audio), I/O errors mapped once, here."""
    try:
        yield from read_raw(resp)
    except (Urllib3Error, OSError) as exc:
        raise stream_io_error(provider, exc, timeout) from exc


def http_call(provider, ctx, endpoint, body, stream, req=None):
    """One request-answer exchange for the prepared body: a JSON answer or a framed stream. `req` is
    the request the provider built from `body` (built here when the caller has none)."""
    if req is None:
        req = provider.build_request(endpoint, body, stream)
    try:
        resp = ctx.transport.send(provider, req, timeout=ctx.timeout, stream=stream)
    except ErrorAnswer as answer:
        raise provider.map_error(answer.status, answer.raw, answer.headers) from None
    if stream and endpoint == "speech":  # audio bytes, passed on as they come
        chunks = ChunkStream(provider, endpoint, raw_chunks(provider, resp, ctx.timeout), resp)
        chunks.media_type = resp.headers.get("content-type") or "application/octet-stream"
        return chunks
    if stream:
        if provider.stream_format == "sse" and resp.headers.get("content-type", "").startswith("application/json"):
            try:
                raw = resp.read()
            except (Urllib3Error, OSError) as exc:
                resp.close()
                raise errors.UpstreamConnectionError(
                    f"Upstream stream broke (deployment: {provider.label}): {type(exc).__name__}") from exc
            failure = json_instead_of_stream(provider, raw, resp.headers)
            if failure is not None:
                resp.close()
                raise failure
            events, backlog = _events_of(raw), None
        else:
            backlog = Backlog()
            events = (ndjson_lines if provider.stream_format == "ndjson" else sse_events)(resp, backlog)
        state = provider.new_stream_state(endpoint, body)
        chunks = translated_chunks(provider, endpoint, events, state, ctx.timeout)
        return ChunkStream(provider, endpoint, chunks, resp, backlog=backlog)
    data = load_json(provider, resp.data)
    if type(data) is dict and data.get("error"):
        raise answer_error(provider, data, resp.data, resp.headers)
    try:
        return provider.parse_response(endpoint, data, body)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise errors.UpstreamError(
            f"Upstream answered in a shape this gateway cannot read (deployment: {provider.label})") from exc
