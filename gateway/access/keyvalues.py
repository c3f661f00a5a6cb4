"""Bounds of what a key stores: numbers that fit their columns, strings without NUL, JSON fields
(models, aliases, config, metadata) of bounded depth and size; and reading stored values safely."""

import math

import orjson
from marshmallow import ValidationError

from gateway import errors

LIMIT_MAX = 2**31 - 1  # PostgreSQL's integer: rpm_limit, tpm_limit, max_parallel_requests
MAX_JSON_DEPTH = 20  # objects and lists inside each other, in one field
MAX_JSON_BYTES = 64 * 1024  # one field, as JSON
_INT_BOUND = 2**63  # what a JSON library on the way (orjson, PostgreSQL's json) keeps as an integer


def no_nul(value):
    """Marshmallow validator: PostgreSQL cannot store a NUL character in text."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def _problem(value, bounded=True):
    """What makes a JSON value unfit to store (`bounded`: or larger than MAX_JSON_BYTES), or None.

    Walked with a stack, not recursion: a hostile value is as deep as the body is long."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if bounded and nodes > MAX_JSON_BYTES:  # every value takes a byte or more as JSON
            return f"is larger than {MAX_JSON_BYTES} bytes as JSON"
        if isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                return f"is nested deeper than {MAX_JSON_DEPTH} levels"
            for name, inner in item.items():
                if not isinstance(name, str):
                    return "has a name that is not a string"
                if bounded and "\x00" in name:
                    return "contains a NUL character"
                stack.append((inner, depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth > MAX_JSON_DEPTH:
                return f"is nested deeper than {MAX_JSON_DEPTH} levels"
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            if bounded and "\x00" in item:
                return "contains a NUL character"
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not -_INT_BOUND <= item < _INT_BOUND:
                return "has a number outside 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "has a number that is not finite"
        else:
            return "is not JSON"
    if bounded and len(orjson.dumps(value)) > MAX_JSON_BYTES:
        return f"is larger than {MAX_JSON_BYTES} bytes as JSON"
    return None


def check_json(name, value):
    """Refuse (400 naming the field) a value that could not be stored, shown or read back."""
    problem = _problem(value)
    if problem is not None:
        raise errors.BadRequestError(f"Invalid request: {name} {problem}.", param=name)


_SHAPES = {
    "models": lambda v: v is None or (isinstance(v, list) and all(isinstance(m, str) for m in v)),
    "aliases": lambda v: v is None or (isinstance(v, dict) and all(isinstance(t, str) for t in v.values())),
    "config": lambda v: v is None or isinstance(v, dict),
    "metadata": lambda v: v is None or isinstance(v, dict),
}


def readable(name, value):
    """(True, value) for a stored value that can be shown; (False, None) for one written before values
    were checked (too deep to render, or of the wrong shape)."""
    if _SHAPES[name](value) and _problem(value, bounded=False) is None:
        return True, value
    return False, None
