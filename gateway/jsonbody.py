"""Tolerant JSON parsing for request bodies: strict first, then forgiving trailing commas."""

import orjson

from gateway.errors import BadRequestError

_WS = b" \t\r\n"


def strip_trailing_commas(raw):
    """Drop commas that follow a value and stand right before a closing bracket, outside strings.

    `[1,]` and `{"a": 1,}` are repaired; `[,]` and `{,}` are left for the parser to reject.
    """
    out = bytearray()
    in_string = False
    escaped = False
    pending_comma = -1  # index in out of a comma that may still turn out to be trailing
    last = 0  # last significant byte outside strings
    for byte in raw:
        if in_string:
            out.append(byte)
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
            continue
        if byte in _WS:
            out.append(byte)
            continue
        if byte in (0x5D, 0x7D) and pending_comma >= 0:  # ] or } after a trailing comma
            del out[pending_comma]
        pending_comma = -1
        if byte == 0x2C and last not in (0, 0x2C, 0x5B, 0x7B):  # a comma after a value
            pending_comma = len(out)
        elif byte == 0x22:
            in_string = True
        last = byte
        out.append(byte)
    return bytes(out)


def parse_body(raw):
    """Parse a request body as a JSON object, whatever its Content-Type said."""
    if not raw or not raw.strip():
        raise BadRequestError("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            data = orjson.loads(strip_trailing_commas(raw))
        except orjson.JSONDecodeError:
            raise BadRequestError(
                f"We could not parse the JSON body of your request: {exc}. "
                "Send a JSON object (Content-Type: application/json).",
                code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_json")
    return data
