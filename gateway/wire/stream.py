"""One stream of OpenAI chunks: the upstream's translated chunks, taps per chunk, one close.

Everything that follows a stream (adapters, the router's bookkeeping, the cache recorder, the meter)
joins the one `ChunkStream` as a tap instead of wrapping it in a generator of its own, so a chunk
passes through one generator frame here, whatever the number of taps (issue #12: there were up to
eleven, each chaining the previous one's close).
"""

from urllib3.exceptions import HTTPError as Urllib3Error


class ChunkStream:
    """OpenAI chunks from one stream, each passed through the taps on its way to the client.

    * taps, in the order added: `tap(chunk)` returns the chunk to pass on (the same one, edited or
      new), or None to drop it; `map(fn)` is the same thing, for adapters.
    * end callbacks (`at_end`), in order, once, when the chunks stop: `fn(None)` when the upstream's
      stream ran to its end, `fn(error)` when an error cut it; never on a client disconnect (the
      iteration closed) nor for a stream that never started. One that raises hands its error on to
      the next and ends the stream with it, as the stages of a chain of generators would.
    * close callbacks (`at_close`), in order, once, by `close()`, whatever ended the stream: first
      the provider's own (`on_close`), then the upstream connection (back to the pool when the stream
      finished, else cut), then the ones added later (the router's, ...).
    """

    __slots__ = ("provider", "endpoint", "finished", "media_type", "_chunks", "_resp", "_taps", "_ends", "_closers",
                 "_first", "_primed", "backlog")

    def __init__(self, provider, endpoint, chunks, resp=None, on_close=None, backlog=None):
        self.provider = provider
        self.endpoint = endpoint
        self.finished = False  # the upstream's chunks ran to their end
        self.media_type = None  # a stream of bytes (speech): the upstream's Content-Type
        self._chunks = chunks
        self._resp = resp
        self._taps = []
        self._ends = []
        self._closers = [on_close] if on_close is not None else []
        if resp is not None:
            self._closers.append(self._release)
        self._first = ()  # the chunk prime() read, passed on first
        self._primed = 0  # how many taps it has been through already
        self.backlog = backlog  # events read from the upstream, not yet taken (wire/upstream.py)

    @property
    def ready(self):
        """Whether the upstream's last read holds more events: the next chunk waits on no I/O, so
        the chunks so far can share one write to the client (api/pipeline.py _sse)."""
        backlog = self.backlog
        return backlog is not None and backlog.n > 0

    def tap(self, fn):
        """Run fn(chunk) on each chunk after the taps added before it (None drops the chunk); self."""
        self._taps.append(fn)
        return self

    map = tap  # an adapter: fn(chunk) is the chunk passed on

    def at_end(self, fn):
        """Call fn(error) once when the chunks stop (error None: the stream ran to its end); self."""
        self._ends.append(fn)
        return self

    def at_close(self, fn):
        """Call fn() once when the stream is closed, after the callbacks added before it; self."""
        self._closers.append(fn)
        return self

    def prime(self):
        """Read the first chunk now, through the taps added so far; iteration passes it on first.

        The router calls this before the response starts, so that a failure before any byte
        reaches the client can still be retried. An empty stream is finished."""
        taps = self._taps
        for chunk in self._chunks:
            chunk = _through(chunk, taps)
            if chunk is not None:
                self._first, self._primed = (chunk,), len(taps)
                return
        self.finished = True

    def __iter__(self):
        """Each chunk through the taps (one generator frame); the end callbacks when they stop."""
        taps = self._taps
        try:
            if self._first:
                (chunk,), self._first = self._first, ()
                chunk = _through(chunk, taps[self._primed:])
                if chunk is not None:
                    yield chunk
            for chunk in self._chunks:
                for tap in taps:
                    chunk = tap(chunk)
                    if chunk is None:
                        break
                else:
                    yield chunk
            self.finished = True
        except GeneratorExit:
            raise  # the client went away: close() settles what is left
        except BaseException as exc:
            error = self._end(exc)
            if error is exc:
                raise
            raise error
        error = self._end(None)
        if error is not None:
            raise error

    def _end(self, error):
        """Run the end callbacks once; the error the stream ends with (None: it ended well)."""
        ends, self._ends = self._ends, []
        for fn in ends:
            try:
                fn(error)
            except BaseException as exc:  # noqa: BLE001  (passed on to the next, then raised)
                error = exc
        return error

    def close(self):
        """Run the close callbacks once, in order (the upstream connection's release among them)."""
        closers = self._closers
        while closers:  # each taken off before it runs: a second close() goes on after one that raised
            closers.pop(0)()

    def _release(self):
        """The upstream connection: back to the pool if the stream ended, else cut."""
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


def _through(chunk, taps):
    """A chunk through some taps: what comes out, or None when one dropped it."""
    for tap in taps:
        chunk = tap(chunk)
        if chunk is None:
            return None
    return chunk
