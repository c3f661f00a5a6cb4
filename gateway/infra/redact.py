"""Redaction: secrets and key-like strings kept out of everything the gateway shows or sends on.

One place for what looks like a credential: upstream error text (providers), span attributes and
URLs (tracing), query parameters in displayed addresses (transport), callback payloads (sinks).
"""

import re

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
