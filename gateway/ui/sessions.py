"""Admin UI sign-ins: server-side sessions in gateway_ui_sessions, named by the hash of a random
cookie token, and the CSRF token every form carries (an HMAC of the session's token, so it needs no
storage and changes with each sign-in).

Who may sign in: the master key, UI_USERNAME / UI_PASSWORD (LiteLLM's variables; both set) as the
admin, or a virtual key, which then acts with its user's role (as it does on the API). A session
holds no key: "admin", or the key's hash; the key's rules are looked up again on every page, so a
key blocked, expired or deleted ends its sessions at once.
"""

import contextlib
import hashlib
import hmac
import os
import secrets
from datetime import datetime
from datetime import timedelta
from datetime import timezone

COOKIE = "gateway_ui"
LOGIN_COOKIE = "gateway_ui_login"  # the sign-in form's CSRF pair, before there is a session
TOKEN_BYTES = 32


def digest(token):
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_for(token):
    """The CSRF token of the session (or sign-in form) whose cookie holds `token`."""
    return hmac.new(token.encode("utf-8", "surrogateescape"), b"gateway-ui-csrf", hashlib.sha256).hexdigest()


def csrf_ok(token, sent):
    return bool(token) and isinstance(sent, str) and hmac.compare_digest(csrf_for(token), sent)


def new_token():
    return secrets.token_urlsafe(TOKEN_BYTES)


def password_sign_in_set(environ=os.environ):
    """Whether UI_USERNAME and UI_PASSWORD are both set (else no password sign-in)."""
    return bool(environ.get("UI_USERNAME") and environ.get("UI_PASSWORD"))


def password_sign_in(username, password, environ=os.environ):
    """Whether (username, password) are UI_USERNAME / UI_PASSWORD (both must be set), compared in
    constant time."""
    want_user, want_password = environ.get("UI_USERNAME"), environ.get("UI_PASSWORD")
    if not password_sign_in_set(environ) or not isinstance(username, str) or not isinstance(password, str):
        return False
    same_user = hmac.compare_digest(username.encode("utf-8", "surrogateescape"), want_user.encode())
    same_password = hmac.compare_digest(password.encode("utf-8", "surrogateescape"), want_password.encode())
    return same_user and same_password


class Sessions:
    """gateway_ui_sessions over the worker's database (a storage.Store); a database that cannot be
    reached is a 503 the page says (gateway.errors), never a traceback."""

    def __init__(self, store, seconds):
        self.store = store
        self.seconds = seconds

    @contextlib.contextmanager
    def _session(self):
        from sqlalchemy.exc import SQLAlchemyError

        from gateway import errors
        try:
            with self.store.get().session() as session:
                yield session
        except SQLAlchemyError as exc:
            raise errors.ServiceUnavailableError("The database is unavailable; sign-in needs it. Retry shortly.",
                                                 code="key_store_unavailable") from exc

    def start(self, kind, key_hash=None, now=None):
        """A new session's cookie token; expired sessions are swept on the way."""
        from gateway.storage.models import UISession
        now = now or datetime.now(timezone.utc)
        token = new_token()
        with self._session() as session:
            session.query(UISession).filter(UISession.expires_at <= now).delete(synchronize_session=False)
            session.add(UISession(id=digest(token), kind=kind, key_hash=key_hash, created_at=now,
                                  expires_at=now + timedelta(seconds=self.seconds)))
            session.commit()
        return token

    def find(self, token, now=None):
        """(kind, key_hash) of a live session, or None (unknown, signed out or expired)."""
        from gateway.storage.models import UISession
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None
        now = now or datetime.now(timezone.utc)
        with self._session() as session:
            row = session.get(UISession, digest(token))
            if row is None:
                return None
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
            return (row.kind, row.key_hash) if expires > now else None

    def end(self, token):
        """Sign out: the session's row is deleted, so its cookie is refused from now on."""
        from gateway.storage.models import UISession
        if not isinstance(token, str):
            return
        with self._session() as session:
            session.query(UISession).filter(UISession.id == digest(token)).delete(synchronize_session=False)
            session.commit()
