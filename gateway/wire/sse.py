"""Server-sent events in (a decoder that survives any network chunking) and out."""

from dataclasses import dataclass

import orjson

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Event:
    """One dispatched SSE event: its `event:` name (or None) and its joined `data:` bytes."""

    event: str | None
    data: bytes


class SSEDecoder:
    """Incremental SSE parser over raw bytes.

    Lines are split on bytes, so a multi-byte UTF-8 character split across network chunks is
    reassembled before anyone decodes it; CR, LF and CRLF all end a line, even when the CR and the
    LF arrive in different chunks.
    """

    def __init__(self):
        self._buffer = b""
        self._data = []
        self._event = None

    def feed(self, chunk):
        """Add bytes; return the events completed by them."""
        buffer = self._buffer + chunk
        held = b""
        if buffer.endswith(b"\r"):  # may be the first half of a CRLF
            buffer, held = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + held
        events = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self):
        """End of stream: a held CR ends its line; an event without its blank line is dropped."""
        events = []
        if self._buffer:
            rest, self._buffer = self._buffer.rstrip(b"\r"), b""
            self._line(rest, events)
        return events

    def _line(self, line, events):
        if not line:
            if self._data:
                events.append(Event(self._event, b"\n".join(self._data)))
            self._data = []
            self._event = None
            return
        if line[0] == 0x3A:  # ':' starts a comment (keep-alive)
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


def encode(obj):
    """One `data:` event carrying a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"
