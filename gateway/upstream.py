"""One call against one deployment over HTTP: send, decode (JSON, SSE, NDJSON), translate."""

from dataclasses import dataclass

import orjson
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway import errors
from gateway.sse import SSEDecoder

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a provider needs to run a call: the worker's transport and the call's limits."""

    transport: object
    timeout: float
    drop_params: bool = False


class ChunkStream:
    """OpenAI chunks from one stream; `close()` drops the upstream connection unless it finished."""

    def __init__(self, provider, endpoint, chunks, resp=None, on_close=None):
        self.provider = provider
        self.endpoint = endpoint
        self.finished = False
        self._chunks = chunks
        self._resp = resp
        self._on_close = on_close

    def __iter__(self):
        yield from self._chunks
        self.finished = True

    def map(self, fn):
        """A stream of fn(chunk) over this one, sharing its connection and close()."""
        outer = ChunkStream(self.provider, self.endpoint, (fn(c) for c in self), on_close=self.close)
        return outer

    def close(self):
        """Release the upstream connection: back to the pool if the stream ended, else cut it."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if self.finished:
            try:
                resp.drain_conn()  # the rest is the chunked terminator; keeps TLS connections warm
                resp.release_conn()
                return
            except (Urllib3Error, OSError):
                pass
        resp.close()


def read_raw(resp):
    """Yield bytes as they arrive, without waiting to fill a buffer."""
    while True:
        data = resp.read1(READ_SIZE)
        if not data:
            return
        yield data


def sse_events(resp):
    """The `data` of each SSE event of a response body."""
    decoder = SSEDecoder()
    for raw in read_raw(resp):
        for event in decoder.feed(raw):
            yield event.data
    for event in decoder.close():
        yield event.data


def ndjson_lines(resp):
    """Each non-empty line of a newline-delimited JSON body."""
    buffer = b""
    for raw in read_raw(resp):
        buffer += raw
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def translated_chunks(provider, endpoint, events, state, timeout):
    """Run each upstream event through the provider's translator; map I/O errors once, here."""
    try:
        for data in events:
            chunks = provider.parse_stream_event(endpoint, data, state)
            if chunks is None:
                return
            yield from chunks
    except Urllib3Timeout as exc:
        raise errors.UpstreamTimeoutError(
            f"Upstream stream stalled for {timeout:g}s (deployment: {provider.label})") from exc
    except (Urllib3Error, OSError) as exc:
        raise errors.UpstreamConnectionError(
            f"Upstream stream broke (deployment: {provider.label}): {type(exc).__name__}") from exc
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise errors.UpstreamError(
            f"Upstream sent a stream event this gateway cannot read (deployment: {provider.label})") from exc


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


def http_call(provider, ctx, endpoint, body, stream):
    """The common HTTP flow: one request, a JSON answer or a framed stream."""
    req = provider.build_request(endpoint, body, stream)
    resp = ctx.transport.send(provider, req, timeout=ctx.timeout, stream=stream)
    if stream:
        events = ndjson_lines(resp) if provider.stream_format == "ndjson" else sse_events(resp)
        state = provider.new_stream_state(endpoint, body)
        chunks = translated_chunks(provider, endpoint, events, state, ctx.timeout)
        return ChunkStream(provider, endpoint, chunks, resp)
    data = load_json(provider, resp.data)
    try:
        return provider.parse_response(endpoint, data, body)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise errors.UpstreamError(
            f"Upstream answered in a shape this gateway cannot read (deployment: {provider.label})") from exc
