"""Who is calling: master key check (virtual keys come with the keys service)."""

import hmac

from gateway.errors import AuthenticationError


def bearer_token(headers):
    """The API key a request carries, or None."""
    value = headers.get("Authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    value = headers.get("api-key")
    return value.strip() if value and value.strip() else None


class Authenticator:
    """Checks the master key in constant time; with no master key every call is allowed."""

    def __init__(self, master_key):
        self._master = master_key.encode("utf-8") if master_key else None

    @property
    def enabled(self):
        """Whether calls need a key at all."""
        return self._master is not None

    def check(self, headers):
        """Raise AuthenticationError unless the request carries the master key."""
        if self._master is None:
            return
        token = bearer_token(headers)
        if token is None:
            raise AuthenticationError(
                "No API key provided. Send `Authorization: Bearer <key>`.", code="missing_api_key")
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._master):
            raise AuthenticationError("Invalid API key. Check the key you are sending to the gateway.")
