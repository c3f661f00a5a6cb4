"""Redaction: secrets and key-like strings kept out of everything the gateway shows or sends on.

One place for what looks like a credential: upstream error text (providers), span attributes and
URLs (tracing), displayed addresses (display_url: transport, providers, model info), callback payloads
(sinks).
"""

import re
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import orjson

MARK = "[redacted]"
# An API key by its shape: OpenAI-style `sk-`, `pk-`, `rk-`, and `key-` prefixes.
KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-*.]{3,}")
# Names (of query parameters, attributes) whose values are credentials: `?key=`, `api-key=`, SAS `sig=`...
SENSITIVE_NAME = re.compile(r"key|token|secret|password|passwd|auth|sig|credential", re.I)


def redact(text, secrets=(), mark=MARK):
    """`text` with each of the known `secrets`, then anything key-like, replaced by `mark`."""
    for secret in secrets:
        text = text.replace(secret, mark)
    return KEY_LIKE.sub(mark, text)


def masked(value, secrets=()):
    """A copy of a configuration value fit to show: a credential-named field's value is MARK, a URL
    loses its user:password@ (display_url), and every string has the known `secrets` and anything
    key-like replaced (redact)."""
    known = [s for s in secrets if isinstance(s, str) and len(s) >= 6]
    if isinstance(value, dict):
        return {k: (MARK if value[k] not in (None, "", False) and sensitive_name(str(k)) else masked(value[k], known))
                for k in value}
    if isinstance(value, (list, tuple)):
        return [masked(v, known) for v in value]
    if isinstance(value, str):
        return redact(display_url(value) if "://" in value else value, known)  # no user:password@ in a URL
    return value


def has_key_like(text):
    """Whether `text` holds something shaped like an API key."""
    return KEY_LIKE.search(text) is not None


def sensitive_name(name):
    """Whether a parameter or field named `name` carries a credential."""
    return SENSITIVE_NAME.search(name) is not None


def scrubber(secrets):
    """A function replacing every known secret (and its JSON-escaped form) in a bytes payload;
    secrets shorter than 6 characters are ignored (they would mangle ordinary text)."""
    needles = set()
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 6:
            needles.add(secret.encode())
            needles.add(orjson.dumps(secret)[1:-1])
    needles = sorted(needles, key=len, reverse=True)
    mark = MARK.encode()

    def scrub(item):
        for needle in needles:
            if needle in item:
                item = item.replace(needle, mark)
        return item
    return scrub


def display_url(url):
    """An upstream address as humans may see it (headers, errors, /health, logs, callbacks, spans,
    debug curl lines): scheme://host[:port]/path, never a `user:password@` part, and the values of
    query parameters named like credentials (`?key=`, `api-key=`, `sig=`) masked."""
    if not url or not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # an unparseable address is shown as nothing rather than as itself
        return "[invalid url]"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(_masked_param(p) for p in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _masked_param(piece):
    name, sep, _ = piece.partition("=")
    return f"{name}=****" if sep and sensitive_name(unquote(name)) else piece
