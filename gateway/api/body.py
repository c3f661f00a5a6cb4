"""Tolerant JSON parsing for request bodies: strict first, then forgiving trailing commas; never
deeper than MAX_DEPTH."""

import re

import orjson

from gateway.errors import BadRequestError
from gateway.infra.coop import let_others_run

# Deepest nesting a body may have (the body object itself is level 1). orjson reads up to 1024
# levels but writes only up to 254: a body between the two would parse, then fail as a 500 when the
# cache key, the upstream request or a log record is serialized. Real bodies (JSON schemas in
# `tools` and `response_format` included) stay far below 100, which leaves the adapters that wrap a
# body in a few more levels room to spare.
MAX_DEPTH = 100
# Trailing commas are forgiven only in bodies up to this size; a larger body with one is refused.
# Hand-written JSON (the only kind with trailing commas) is small, and the repair, cheap as it is,
# should not let one client hold a worker with a 30 MB body full of them.
REPAIR_MAX_BYTES = 1024 * 1024
_TRAILING_COMMA = "trailing comma"  # how orjson's error message starts for `[1,]` and `{"a": 1,}`

# The repair never loops over bytes in Python: C-level passes over the body (replace, count, find,
# a regex search), each over a stretch of it no other pass of this call rescans, so the work is linear
# in the size; Python runs once per comma that stands before a closing bracket.
_CANDIDATE = re.compile(rb",[ \t\r\n]*+[\]}]")
_WS_RUN = re.compile(rb"[ \t\r\n]*+")
_WS = b" \t\r\n"
_YIELD_EVERY = 4096  # repairs between two turns for the worker's other connections


def strip_trailing_commas(raw):
    """Drop commas that follow a value and stand right before a closing bracket, outside strings.

    `[1,]` and `{"a": 1,}` are repaired; `[,]` and `{,}` are left for the parser to reject.
    """
    # Escaped backslashes and quotes masked (same length): every `"` left opens or closes a string.
    masked = raw.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    parts, kept_from, pos, quotes, counted_to, reverse = [], 0, 0, 0, 0, None
    while True:
        found = _CANDIDATE.search(masked, pos)
        if found is None:
            break
        comma = found.start()
        quotes += masked.count(b'"', counted_to, comma)
        counted_to, pos = comma, found.end()
        if quotes & 1:  # inside a string: go on after it
            closing = masked.find(b'"', comma)
            if closing < 0:
                break
            quotes, counted_to, pos = quotes + 1, closing + 1, closing + 1
            continue
        before = comma - 1  # the byte before the comma, whitespace skipped
        if before >= 0 and masked[before] in _WS:
            if reverse is None:
                reverse = masked[::-1]
            start = len(masked) - comma
            before -= _WS_RUN.match(reverse, start).end() - start
        if before < 0 or masked[before] in b"[{,":  # not after a value: left for the parser
            continue
        parts.append(raw[kept_from:comma])
        kept_from = comma + 1
        if len(parts) % _YIELD_EVERY == 0:
            let_others_run()
    parts.append(raw[kept_from:])
    return b"".join(parts)


def parse_body(raw):
    """Parse a request body as a JSON object, whatever its Content-Type said."""
    if not raw or not raw.strip():
        raise BadRequestError("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        data = _repaired(raw, exc)
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_json")
    # Cheap first: a body with no more brackets than MAX_DEPTH cannot be deeper (most bodies).
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        raise BadRequestError(f"The JSON body of your request is nested more than {MAX_DEPTH} levels deep.",
                              code="invalid_json")
    return data


def _repaired(raw, exc):
    """The body parsed after its trailing commas are dropped, or the 400 the first error deserves."""
    if "depth" in exc.msg:  # orjson's own limit (1024 levels)
        raise BadRequestError(f"The JSON body of your request is nested more than {MAX_DEPTH} levels deep.",
                              code="invalid_json") from None
    if not exc.msg.startswith(_TRAILING_COMMA):  # nothing a repair could fix
        raise _invalid(exc)
    if len(raw) > REPAIR_MAX_BYTES:
        raise _invalid(exc, f" Trailing commas are forgiven only in bodies up to {REPAIR_MAX_BYTES} bytes.")
    let_others_run()  # the repair and the second parse do not yield: let other connections go first
    try:
        return orjson.loads(strip_trailing_commas(raw))
    except orjson.JSONDecodeError:
        raise _invalid(exc) from None


def _invalid(exc, extra=""):
    return BadRequestError(f"We could not parse the JSON body of your request: {exc}.{extra} "
                           "Send a JSON object (Content-Type: application/json).", code="invalid_json")


def _deeper_than(data, limit):
    """Whether containers nest more than `limit` levels, walked level by level (no recursion)."""
    level, depth = [data], 1
    while level:
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in (node.values() if isinstance(node, dict) else node):
                if isinstance(child, (dict, list)):
                    below.append(child)
        level, depth = below, depth + 1
    return False
