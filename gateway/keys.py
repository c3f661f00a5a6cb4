"""Virtual keys: generated once, stored as SHA-256 hashes, looked up through a short in-process cache."""

import hashlib
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from gateway import errors
from gateway.schemas import first_error

log = logging.getLogger("gateway.keys")

KEY_PREFIX = "sk-"
# sk- + 43 url-safe characters (256 random bits); anything else is refused without a lookup.
_KEY_SHAPE = re.compile(r"^sk-[A-Za-z0-9_-]{20,128}$")
_HASH_SHAPE = re.compile(r"^[0-9a-f]{64}$")
_DURATION = re.compile(r"^(\d{1,9})\s*([a-z]+)$")
# LiteLLM's docs write both "20m" and "30min"; accept the usual spellings of each unit.
_UNITS = {**dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
          **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
          **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
          **dict.fromkeys(("d", "day", "days"), 86400),
          **dict.fromkeys(("w", "wk", "week", "weeks"), 7 * 86400)}
CACHE_SECONDS = 5.0
_MAX_DURATION_SECONDS = 100 * 366 * 86400
NEGATIVE_CACHE_SECONDS = 1.0


def looks_like_key(token):
    """Whether a token could be one of our keys at all (hostile headers stop here, fast)."""
    return isinstance(token, str) and _KEY_SHAPE.match(token) is not None


def new_key():
    """A fresh virtual key: 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    """What the database stores instead of the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def parse_duration(value):
    """'30s' / '30m' / '30h' / '30d' -> timedelta; 'never' -> None."""
    if value == "never":
        return None
    match = _DURATION.match(value.strip().lower()) if isinstance(value, str) else None
    if not match or match.group(2) not in _UNITS:
        raise errors.BadRequestError("`duration` must look like 30s, 30m (30min), 30h, 30d, or be \"never\".",
                                     param="duration")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > _MAX_DURATION_SECONDS:
        raise errors.BadRequestError("`duration` is longer than 100 years; use \"never\" for a key that does "
                                     "not expire.", param="duration")
    return timedelta(seconds=seconds)


class _KeySchema(Schema):
    """Fields of /key/generate and /key/update (LiteLLM's names; other fields are ignored)."""

    class Meta:
        unknown = INCLUDE

    models = fields.List(fields.String(), allow_none=True)
    duration = fields.String(allow_none=True)
    aliases = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    config = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    max_budget = fields.Float(allow_none=True, validate=validate.Range(min=0))
    budget_duration = fields.String(allow_none=True)
    tpm_limit = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    rpm_limit = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    max_parallel_requests = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    key_alias = fields.String(allow_none=True, validate=validate.Length(max=255))
    user_id = fields.String(allow_none=True, validate=validate.Length(max=255))
    team_id = fields.String(allow_none=True, validate=validate.Length(max=255))


_SCHEMA = _KeySchema()
_EDITABLE = ("models", "aliases", "config", "max_budget", "budget_duration", "tpm_limit", "rpm_limit",
             "max_parallel_requests", "key_alias", "user_id", "team_id")


@dataclass(frozen=True)
class KeyRules:
    """What the hot path needs to know about a key, as cached."""

    hash: str
    alias: str | None
    models: tuple | None
    aliases: dict
    expires: datetime | None
    blocked: bool
    max_budget: float | None
    spend: float
    rpm_limit: int | None
    max_parallel_requests: int | None
    tpm_limit: int | None = None
    budget_duration: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    budget_reset_at: datetime | None = None
    key_id: int | None = None  # the key's identity (gateway_keys.id): stays the same across /key/regenerate


def _validated(data):
    if not isinstance(data, dict):
        raise errors.BadRequestError("The request body must be a JSON object.")
    problems = _SCHEMA.validate(data)
    if problems:
        param, text = first_error(problems)
        raise errors.BadRequestError(f"Invalid request: {param}: {text}", param=param.split(".")[0])
    return data


def _info(row):
    """A key's public facts: never the key, only its hash (its id) and a short hint."""
    return {"token": row.key_hash, "key_name": row.key_hint, "key_alias": row.key_alias,
            "user_id": row.user_id, "team_id": row.team_id, "models": row.models or [],
            "aliases": row.aliases or {}, "config": row.config or {}, "metadata": row.meta or {},
            "spend": row.spend, "max_budget": row.max_budget, "budget_duration": row.budget_duration,
            "budget_reset_at": _aware(row.budget_reset_at).isoformat() if row.budget_reset_at else None,
            "reserved": row.reserved or 0.0,
            "tpm_limit": row.tpm_limit, "rpm_limit": row.rpm_limit,
            "max_parallel_requests": row.max_parallel_requests,
            "expires": _aware(row.expires).isoformat() if row.expires else None, "blocked": row.blocked,
            "created_at": _aware(row.created_at).isoformat() if row.created_at else None}


class KeyService:
    """Create, read, change and check virtual keys."""

    def __init__(self, db, default_duration="1h"):
        self.db = db
        self.default_duration = default_duration
        self._cache = {}
        self._lock = threading.Lock()

    # -- the hot path ---------------------------------------------------------------------------

    def lookup(self, token):
        """The rules of a key, or None; cached for a few seconds (negative answers for one)."""
        if not looks_like_key(token):
            return None
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        from gateway.db.models import VirtualKey
        try:
            with self.db.session() as session:
                row = session.query(VirtualKey).filter(VirtualKey.key_hash == digest).one_or_none()
                rules = None if row is None else KeyRules(
                    # LiteLLM reads an empty list as "every model", as /key/info shows such keys.
                    row.key_hash, row.key_alias, tuple(row.models) if row.models else None,
                    dict(row.aliases or {}), _aware(row.expires), row.blocked, row.max_budget, row.spend,
                    row.rpm_limit, row.max_parallel_requests, row.tpm_limit, row.budget_duration,
                    row.user_id, row.team_id, _aware(row.budget_reset_at), row.id)
        except Exception as exc:  # noqa: BLE001  (the database is down or restarting)
            if cached is not None:
                # Keep serving the key as last seen (its spend is spooled meanwhile); look again soon.
                with self._lock:
                    self._cache[digest] = (now + NEGATIVE_CACHE_SECONDS, cached[1])
                return cached[1]
            log.error("key lookup failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailableError("The key store is unavailable; retry shortly.",
                                                 code="key_store_unavailable",
                                                 headers={"Retry-After": "2"}) from exc
        ttl = CACHE_SECONDS if rules is not None else NEGATIVE_CACHE_SECONDS
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + ttl, rules)  # from when the answer came back
        return rules

    def forget(self, digest):
        """Drop a key from this worker's cache (other workers notice within CACHE_SECONDS)."""
        self._cache.pop(digest, None)

    # -- management -----------------------------------------------------------------------------

    def generate(self, data):
        """/key/generate: a new key, shown once."""
        from gateway.db.models import VirtualKey
        data = _validated(data)
        duration = data.get("duration") or self.default_duration
        delta = parse_duration(duration)
        expires = datetime.now(timezone.utc) + delta if delta is not None else None
        key = new_key()
        row = VirtualKey(key_hash=hash_key(key), key_hint=f"sk-...{key[-4:]}", expires=expires,
                         meta=data.get("metadata") or {}, blocked=False, spend=0.0)
        for name in _EDITABLE:
            if name in data:
                setattr(row, name, data[name] if data[name] is not None or name == "models" else None)
        row.aliases = row.aliases or {}
        row.config = row.config or {}
        row.reserved = 0.0
        row.budget_reset_at = _budget_reset_at(data.get("budget_duration"))
        with self.db.session() as session:
            session.add(row)
            session.flush()
            answer = _info(row)
        return {"key": key, "expires": answer["expires"], **answer}

    def _row(self, session, key_or_hash):
        from gateway.db.models import VirtualKey
        if not isinstance(key_or_hash, str) or not key_or_hash:
            raise errors.BadRequestError("`key` is required.", param="key")
        digest = key_or_hash if _HASH_SHAPE.match(key_or_hash) else hash_key(key_or_hash)
        row = session.query(VirtualKey).filter(VirtualKey.key_hash == digest).one_or_none()
        if row is None:
            raise errors.NotFoundError("No such key.", param="key", code="key_not_found")
        return row

    def info(self, key_or_hash):
        """/key/info: the key's facts and spend."""
        with self.db.session() as session:
            return _info(self._row(session, key_or_hash))

    def update(self, data):
        """/key/update: change the given fields (duration restarts from now)."""
        data = _validated(data)
        with self.db.session() as session:
            row = self._row(session, data.get("key"))
            for name in _EDITABLE:
                if name in data:
                    setattr(row, name, data[name])
            if "metadata" in data:
                row.meta = data["metadata"] or {}
            if "duration" in data:
                delta = parse_duration(data["duration"] or self.default_duration)
                row.expires = datetime.now(timezone.utc) + delta if delta is not None else None
            if "budget_duration" in data:  # a new period starts now
                row.budget_reset_at = _budget_reset_at(data["budget_duration"])
            row.aliases = row.aliases or {}
            row.config = row.config or {}
            session.flush()
            self.forget(row.key_hash)
            return _info(row)

    def delete(self, keys):
        """/key/delete: remove keys; answers the hashes removed."""
        if not isinstance(keys, list) or not keys:
            raise errors.BadRequestError("`keys` must be a non-empty list.", param="keys")
        deleted = []
        with self.db.session() as session:
            for key in keys:
                row = self._row(session, key)
                deleted.append(row.key_hash)
                session.delete(row)
        for digest in deleted:
            self.forget(digest)
        return deleted

    def list(self):
        """/key/list: every key's facts (no key itself)."""
        from gateway.db.models import VirtualKey
        with self.db.session() as session:
            return [_info(row) for row in session.query(VirtualKey).order_by(VirtualKey.id)]

    def regenerate(self, key_or_hash):
        """/key/regenerate: same rules, a new key; the old one stops working."""
        key = new_key()
        with self.db.session() as session:
            row = self._row(session, key_or_hash)
            old = row.key_hash
            row.key_hash, row.key_hint = hash_key(key), f"sk-...{key[-4:]}"
            session.flush()
            answer = _info(row)
        self.forget(old)
        return {"key": key, **answer}

    def set_blocked(self, key_or_hash, blocked):
        """/key/block and /key/unblock."""
        with self.db.session() as session:
            row = self._row(session, key_or_hash)
            row.blocked = blocked
            session.flush()
            self.forget(row.key_hash)
            return _info(row)


def _budget_reset_at(budget_duration):
    """When a key's first budget period ends ("30d": spend resets to 0 every 30 days)."""
    if not budget_duration:
        return None
    try:
        delta = parse_duration(budget_duration)
    except errors.BadRequestError:
        delta = None
    if delta is None:
        raise errors.BadRequestError("`budget_duration` must look like 30s, 30m, 30h or 30d.",
                                     param="budget_duration")
    return datetime.now(timezone.utc) + delta


def _aware(value):
    """SQLite hands datetimes back naive; they were stored in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def check_rules(rules, now=None):
    """Refuse an expired, blocked or over-budget key before any upstream work."""
    now = now or datetime.now(timezone.utc)
    if rules.blocked:
        raise errors.PermissionDeniedError("This key is blocked.", code="key_blocked")
    if rules.expires is not None and rules.expires <= now:
        raise errors.AuthenticationError(f"This key expired at {rules.expires.isoformat()}.", code="key_expired")
    period_over = rules.budget_reset_at is not None and rules.budget_reset_at <= now
    if rules.max_budget is not None and rules.spend >= rules.max_budget and not period_over:
        raise errors.BudgetExceededError(
            f"Budget has been exceeded! Key budget: ${rules.max_budget:.6g}, spent: ${rules.spend:.6g}.")

