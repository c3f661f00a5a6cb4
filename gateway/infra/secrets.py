"""Encryption at rest of the secret values of database models (provider keys and the like).

Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) with a key derived by HKDF-SHA256
from the salt key: GATEWAY_SALT_KEY, else LiteLLM's LITELLM_SALT_KEY, else the master key (as LiteLLM
falls back; warned once, since rotating the master key then makes the stored secrets unreadable).
A stored value is a marked text (`gateway-enc:v1:<token>`), so a value that is not encrypted (a
row written by hand) is told apart from one that cannot be decrypted (the salt key changed).
"""

import base64
import json
import logging
import os
import re

log = logging.getLogger("gateway.infra.secrets")

MARK = "gateway-enc:v1:"  # a text value
MARK_JSON = "gateway-enc-json:v1:"  # any other JSON value (vertex_credentials as a mapping, headers)
# Parameters whose value is a credential whatever their name says (LiteLLM's list) ...
SECRET_PARAMS = frozenset({"api_key", "aws_secret_access_key", "aws_access_key_id", "aws_session_token",
                           "azure_ad_token", "vertex_credentials", "headers", "extra_headers"})
# ... and any parameter whose name says so.
_SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential|auth", re.I)
_HKDF_SALT = b"gateway database model secrets"
_warned = set()


class SecretError(ValueError):
    """A stored value that cannot be decrypted with this salt key (it never holds the value)."""


def is_secret(name, value):
    """Whether litellm_params[`name`] = `value` is kept encrypted: a credential's name, with a value
    that is not a number or a yes/no (max_tokens and input_cost_per_token are not secrets), and an
    api_base carrying user:password."""
    if value is None or isinstance(value, (bool, int, float)):
        return False
    if name == "api_base":
        return isinstance(value, str) and "@" in value
    return name in SECRET_PARAMS or _SECRET_NAME.search(name) is not None


def salt_key(master_key, environ=os.environ):
    """The text the encryption key is derived from, or None when there is none at all."""
    for name in ("GATEWAY_SALT_KEY", "LITELLM_SALT_KEY"):
        if environ.get(name):
            return environ[name]
    if master_key and "master" not in _warned:
        _warned.add("master")
        log.warning("GATEWAY_SALT_KEY (or LITELLM_SALT_KEY) is not set: provider keys of database models "
                    "are encrypted with a key derived from the master key, so changing the master key "
                    "makes them unreadable; set a salt key of its own and never change it")
    return master_key or None


class SecretBox:
    """Encrypts and decrypts single values with a key derived from the salt key."""

    def __init__(self, salt):
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        if not salt:
            raise ValueError("no salt key to derive the encryption key from")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT,
                       info=b"fernet v1").derive(salt.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, value):
        """The stored form of one value (text, or any JSON value)."""
        if isinstance(value, str):
            return MARK + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")
        plain = json.dumps(value, separators=(",", ":")).encode("utf-8")
        return MARK_JSON + self._fernet.encrypt(plain).decode("ascii")

    def decrypt(self, stored):
        """The value of a stored form; values without a mark are returned as they are."""
        from cryptography.fernet import InvalidToken
        if not isinstance(stored, str) or not stored.startswith((MARK, MARK_JSON)):
            return stored
        as_json = stored.startswith(MARK_JSON)
        token = stored[len(MARK_JSON if as_json else MARK):]
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, ValueError):
            raise SecretError("cannot be decrypted with this salt key") from None
        return json.loads(plain) if as_json else plain.decode("utf-8")

    def seal(self, params):
        """litellm_params with every secret value encrypted."""
        return {name: self.encrypt(value) if is_secret(name, value) else value for name, value in params.items()}

    def open(self, params):
        """litellm_params as stored, decrypted (SecretError names no value)."""
        return {name: self.decrypt(value) for name, value in params.items()}


def is_sealed(value):
    """Whether a stored value is an encrypted one."""
    return isinstance(value, str) and value.startswith((MARK, MARK_JSON))
