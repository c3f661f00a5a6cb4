"""Virtual keys: generated once, stored as SHA-256 hashes, looked up through a short in-process cache
that every change of a key clears in every worker at once (gateway/keychanges.py)."""

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
from gateway.access.keychanges import KeyChanges
from gateway.access.keyvalues import LIMIT_MAX
from gateway.access.keyvalues import MAX_JSON_BYTES  # noqa: F401  (the bounds, named where keys are)
from gateway.access.keyvalues import MAX_JSON_DEPTH  # noqa: F401
from gateway.access.keyvalues import no_nul
from gateway.access.keyvalues import readable
from gateway.access.levels import blocked_by
from gateway.access.levels import effective_models
from gateway.access.levels import ensure_user
from gateway.access.levels import validated
from gateway.access.levels import require_team
from gateway.config.parse import MAX_DURATION_SECONDS
from gateway.config.parse import duration_seconds

log = logging.getLogger("gateway.access.keys")

KEY_PREFIX = "sk-"
# sk- + 43 url-safe characters (256 random bits); anything else is refused without a lookup.
_KEY_SHAPE = re.compile(r"^sk-[A-Za-z0-9_-]{20,128}$")
_HASH_SHAPE = re.compile(r"^[0-9a-f]{64}$")
CACHE_SECONDS = 5.0
# With Redis, how often a worker asks whether a key changed on another instance (a GET, amortized).
REMOTE_CHECK_SECONDS = 0.5
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
    """'30s' / '30m' / '30h' / '30d' -> timedelta; 'never' -> None (the grammar config durations use)."""
    try:
        seconds = duration_seconds(value)
    except ValueError:
        raise errors.BadRequestError("`duration` must look like 30s, 30m (30min), 30h, 30d, or be \"never\".",
                                     param="duration") from None
    if seconds is None:
        return None
    if seconds > MAX_DURATION_SECONDS:
        raise errors.BadRequestError("`duration` is longer than 100 years; use \"never\" for a key that does "
                                     "not expire.", param="duration")
    return timedelta(seconds=seconds)


class _KeySchema(Schema):
    """Fields of /key/generate and /key/update (LiteLLM's names; other fields are ignored).

    Every number fits its column (PostgreSQL's integer is 32 bits), no stored string holds a NUL
    (PostgreSQL refuses it), and the JSON fields are bounded in depth and size (check_json)."""

    class Meta:
        unknown = INCLUDE

    models = fields.List(fields.String(validate=no_nul), allow_none=True)
    duration = fields.String(allow_none=True, validate=no_nul)
    aliases = fields.Dict(keys=fields.String(validate=no_nul), values=fields.String(validate=no_nul),
                          allow_none=True)
    config = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    max_budget = fields.Float(allow_none=True, allow_nan=False, validate=validate.Range(min=0))
    budget_duration = fields.String(allow_none=True, validate=[validate.Length(max=16), no_nul])
    tpm_limit = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=LIMIT_MAX))
    rpm_limit = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=LIMIT_MAX))
    max_parallel_requests = fields.Integer(strict=True, allow_none=True,
                                           validate=validate.Range(min=0, max=LIMIT_MAX))
    key_alias = fields.String(allow_none=True, validate=[validate.Length(max=255), no_nul])
    user_id = fields.String(allow_none=True, validate=[validate.Length(max=255), no_nul])
    team_id = fields.String(allow_none=True, validate=[validate.Length(max=255), no_nul])


_SCHEMA = _KeySchema()
_EDITABLE = ("models", "aliases", "config", "max_budget", "budget_duration", "tpm_limit", "rpm_limit",
             "max_parallel_requests", "key_alias", "user_id", "team_id")


@dataclass(frozen=True)
class Level:
    """A level above a key whose limits and budget every call of the key also counts against: its
    user, its team, its organization, the call's end user (gateway/access/rules.py applies the
    limits with the key's own; the spend ledger holds the budgets in one transaction)."""

    kind: str  # user, team, organization, end_user
    id: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None

    @property
    def bounds(self):
        """Whether the level limits or budgets calls, or has a budget period for its spend to start
        over in (levels that have none of these are left out)."""
        return (self.rpm_limit is not None or self.tpm_limit is not None
                or self.max_parallel_requests is not None or self.max_budget is not None
                or self.budget_duration is not None)


def levels_of(**found):
    """The Levels (in the order user, team, organization, end_user) of the rows found, only those
    that limit or budget calls or have a budget period: `kind=(id, row)`; None when absent."""
    levels = []
    for kind in ("user", "team", "organization", "end_user"):
        ident, row = found.get(kind, (None, None))
        if row is None:
            continue
        level = Level(kind, ident, row.rpm_limit, row.tpm_limit, row.max_parallel_requests, row.max_budget,
                      row.budget_duration)
        if level.bounds:
            levels.append(level)
    return tuple(levels)


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

    limits_id: str | None = None  # what per-key limits are counted under (limit_identity)
    user_role: str | None = None  # the role of the user that owns the key (None: no user)
    organization_id: str | None = None  # the organization of the key's team
    blocked_by: str | None = None  # which level blocks it: key, team, organization, user, team_deleted, ...
    levels: tuple = ()  # Level: the key's user, team, organization with their limits

    @property
    def identity(self):
        """What per-key limits are counted under: stays the same across /key/regenerate."""
        return self.limits_id or self.hash


def limit_identity(key_id, created_at):
    """A key's name in the shared (Redis) state: its id and creation time, so a regenerate keeps its
    rate windows and slots, and two databases sharing one Redis (or one test process reusing ids
    across fresh databases) never count into each other's windows."""
    stamp = int(created_at.timestamp() * 1_000_000) if created_at is not None else 0
    return f"id{key_id}-{stamp}"


def _validated(data):
    return validated(_SCHEMA, data, ("metadata", "config", "aliases", "models"))


def _info(row):
    """A key's public facts: never the key, only its hash (its id, LiteLLM's `token_id`) and a short hint.

    A stored value that could not be rendered (written before values were checked) is shown empty and
    named in `unreadable`, so one bad row never breaks /key/list for every key."""
    shown, unreadable = {}, []
    for name, value, empty in (("models", row.models, []), ("aliases", row.aliases, {}),
                               ("config", row.config, {}), ("metadata", row.meta, {})):
        ok, value = readable(name, value)
        shown[name] = value if value is not None else empty
        if not ok:
            unreadable.append(name)
    info = {"token": row.key_hash, "token_id": row.key_hash, "key_name": row.key_hint,
            "key_alias": row.key_alias, "user_id": row.user_id, "team_id": row.team_id, **shown,
            "spend": row.spend, "max_budget": row.max_budget, "budget_duration": row.budget_duration,
            "budget_reset_at": _iso(row.budget_reset_at), "reserved": row.reserved or 0.0,
            "tpm_limit": row.tpm_limit, "rpm_limit": row.rpm_limit,
            "max_parallel_requests": row.max_parallel_requests,
            "expires": _iso(row.expires), "blocked": row.blocked,
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}
    if unreadable:
        log.warning("key %s: stored %s cannot be shown (written before values were checked); update the "
                    "key to replace it", row.key_hash, ", ".join(unreadable))
        info["unreadable"] = unreadable
    return info


def _iso(value):
    return _aware(value).isoformat() if value is not None else None


def _rules(row, team=None, organization=None, user=None, access_groups=None):
    """The cached rules of a row, within its team's, organization's and user's (`models` inherited,
    `blocked` by any of them); a stored value of the wrong shape allows nothing rather than all.
    `access_groups` (name -> its models, or None) lets levels that name access groups be combined."""
    if row.models is not None and not readable("models", row.models)[0]:
        log.warning("key %s: stored models are not a list of names; the key may use no model", row.key_hash)
        models = ()
    else:
        # LiteLLM reads an empty list as "every model", as /key/info shows such keys.
        models = tuple(row.models) if row.models else None
    models = effective_models(models, team, organization, user, access_groups)
    stopped = blocked_by(row.blocked, row.team_id, team, organization, row.user_id, user)
    aliases = row.aliases or {}
    if not readable("aliases", aliases)[0]:
        log.warning("key %s: stored aliases are not names; they are ignored", row.key_hash)
        aliases = {}
    return KeyRules(row.key_hash, row.key_alias, models,
                    dict(aliases), _aware(row.expires), stopped is not None, row.max_budget, row.spend,
                    row.rpm_limit, row.max_parallel_requests, row.tpm_limit, row.budget_duration,
                    row.user_id, row.team_id, _aware(row.budget_reset_at), row.id,
                    limit_identity(row.id, _aware(row.created_at)),
                    user.user_role if user is not None else None,
                    team.organization_id if team is not None else None, stopped,
                    levels_of(user=(row.user_id, user), team=(row.team_id, team),
                              organization=(team.organization_id if team is not None else None, organization)))


_LOOKUP = []


def _lookup_statement():
    """One query for a key and what it inherits: its team, the team's organization, its user (outer
    joins on their primary keys: a key outside a team or without a user has None there). Built once."""
    if not _LOOKUP:
        from sqlalchemy import bindparam
        from sqlalchemy import select

        from gateway.storage.models import Organization
        from gateway.storage.models import Team
        from gateway.storage.models import User
        from gateway.storage.models import VirtualKey
        _LOOKUP.append(select(VirtualKey, Team, Organization, User)
                       .outerjoin(Team, Team.team_id == VirtualKey.team_id)
                       .outerjoin(Organization, Organization.organization_id == Team.organization_id)
                       .outerjoin(User, User.user_id == VirtualKey.user_id)
                       .where(VirtualKey.key_hash == bindparam("digest")))
    return _LOOKUP[0]


class KeyService:
    """Create, read, change and check virtual keys."""

    def __init__(self, db, default_duration="1h", state=None, access_groups=None):
        self.db = db
        self.default_duration = default_duration
        # The router's access groups (name -> its models, or None), to combine a key's models with
        # its team's when either names an access group (access/levels.py effective_models).
        self.access_groups = access_groups
        self._cache = {}
        self._lock = threading.Lock()
        # The router's shared state carries the change signal (None: only the cache's lifetime).
        self.changes = KeyChanges(state, REMOTE_CHECK_SECONDS) if state is not None else None

    # -- the hot path ---------------------------------------------------------------------------

    def lookup(self, token):
        """The rules of a key, or None; cached for a few seconds (negative answers for one), and
        looked up again at once after any key changed anywhere in the instance."""
        if not looks_like_key(token):
            return None
        return self.lookup_digest(hash_key(token))

    def lookup_digest(self, digest):
        """lookup() by the key's hash (an admin UI session names its key so: it never holds the key)."""
        now = time.monotonic()
        # Read before the query: a change committed after it makes the answer below stale.
        seen = self.changes.count(now) if self.changes is not None else 0
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now and cached[2] == seen:
            return cached[1]
        try:
            with self.db.session() as session:
                found = session.execute(_lookup_statement(), {"digest": digest}).one_or_none()
                rules = None if found is None else _rules(*found, access_groups=self.access_groups)
        except Exception as exc:  # noqa: BLE001  (the database is down or restarting)
            if cached is not None:
                # Keep serving the key as last seen (its spend is spooled meanwhile); look again soon.
                with self._lock:
                    self._cache[digest] = (now + NEGATIVE_CACHE_SECONDS, cached[1], seen)
                return cached[1]
            log.error("key lookup failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailableError("The key store is unavailable; retry shortly.",
                                                 code="key_store_unavailable",
                                                 headers={"Retry-After": "2"}) from exc
        ttl = CACHE_SECONDS if rules is not None else NEGATIVE_CACHE_SECONDS
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + ttl, rules, seen)  # from when the answer came back
        return rules

    def end_user(self, user_id):
        """(blocked, Level or None) of the end user a call names in its `user` field: whether it is
        blocked, and its limits and budget when it has any. Cached as keys are (an unknown end user
        too), and looked up again after any change of the hierarchy."""
        now = time.monotonic()
        seen = self.changes.count(now) if self.changes is not None else 0
        name = ("end_user", user_id)
        cached = self._cache.get(name)
        if cached is not None and cached[0] > now and cached[2] == seen:
            return cached[1]
        from gateway.storage.models import EndUser
        try:
            with self.db.session() as session:
                row = session.get(EndUser, user_id)
                found = (False, None) if row is None else (
                    bool(row.blocked), (levels_of(end_user=(user_id, row)) or (None,))[0])
        except Exception as exc:  # noqa: BLE001  (the database is down or restarting)
            if cached is not None:
                return cached[1]
            log.error("end user lookup failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailableError("The key store is unavailable; retry shortly.",
                                                 code="key_store_unavailable",
                                                 headers={"Retry-After": "2"}) from exc
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[name] = (time.monotonic() + CACHE_SECONDS, found, seen)
        return found

    def forget(self, digest):
        """Drop a key from this worker's cache."""
        self._cache.pop(digest, None)

    def changed_all(self):
        """After a change of what keys inherit (a team, user or organization) is committed: every
        worker (and instance) looks every key up again."""
        self._cache.clear()
        if self.changes is not None:
            self.changes.announce()

    @staticmethod
    def validate(data):
        """A /key/generate or /key/update body checked (400 naming the first bad field), as stored."""
        return _validated(data)

    @staticmethod
    def describe(row):
        """A stored key's public facts (/key/info's `info`), never the key."""
        return _info(row)

    def _changed(self, *digests):
        """After a change is committed: forget here, and tell every other worker (and instance)."""
        for digest in digests:
            self.forget(digest)
        if self.changes is not None:
            self.changes.announce()

    # -- management -----------------------------------------------------------------------------

    def generate(self, data):
        """/key/generate: a new key, shown once."""
        from gateway.storage.models import VirtualKey
        data = _validated(data)
        # LiteLLM: "duration": null is a key that never expires; an absent one gets the default.
        duration = data["duration"] if data.get("duration", "") != "" else self.default_duration
        delta = parse_duration(duration) if duration is not None else None
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
            _owners(session, data)
            session.add(row)
            session.flush()
            answer = _info(row)
        return {"key": key, "expires": answer["expires"], **answer}

    @staticmethod
    def _digest(key_or_hash):
        if not isinstance(key_or_hash, str) or not key_or_hash:
            raise errors.BadRequestError("`key` is required.", param="key")
        return key_or_hash if _HASH_SHAPE.match(key_or_hash) else hash_key(key_or_hash)

    def _row(self, session, digest):
        from gateway.storage.models import VirtualKey
        row = session.query(VirtualKey).filter(VirtualKey.key_hash == digest).one_or_none()
        if row is None:
            raise _not_found()
        return row

    def _change(self, session, digest, values):
        """Change the row that has this hash now, in one conditional UPDATE: concurrent changes of one
        key serialize on its row (PostgreSQL's row lock, SQLite's write lock), and one that comes
        second finds the hash gone after a regenerate or delete (404) instead of overwriting it."""
        from sqlalchemy import update

        from gateway.storage.models import VirtualKey
        if not values:
            return self._row(session, digest)
        statement = (update(VirtualKey).where(VirtualKey.key_hash == digest).values(**values)
                     .execution_options(synchronize_session=False))
        if session.execute(statement).rowcount != 1:
            raise _not_found()
        return self._row(session, values.get("key_hash", digest))

    def info(self, key_or_hash):
        """/key/info: the key's facts and spend."""
        with self.db.session() as session:
            return _info(self._row(session, self._digest(key_or_hash)))

    def update(self, data):
        """/key/update: change the given fields (duration restarts from now)."""
        data = _validated(data)
        digest = self._digest(data.get("key"))
        values = {name: data[name] for name in _EDITABLE if name in data}
        for name in ("aliases", "config"):
            if name in values:
                values[name] = values[name] or {}
        if "metadata" in data:
            values["meta"] = data["metadata"] or {}
        if "duration" in data:
            delta = parse_duration(data["duration"] or self.default_duration)
            values["expires"] = datetime.now(timezone.utc) + delta if delta is not None else None
        if "budget_duration" in data:  # a new period starts now
            values["budget_reset_at"] = _budget_reset_at(data["budget_duration"])
        with self.db.session() as session:
            _owners(session, values)
            answer = _info(self._change(session, digest, values))
        self._changed(digest)
        return answer

    def delete(self, keys):
        """/key/delete: remove keys (all or none); answers the hashes removed."""
        from sqlalchemy import delete

        from gateway.storage.models import VirtualKey
        if not isinstance(keys, list) or not keys:
            raise errors.BadRequestError("`keys` must be a non-empty list.", param="keys")
        digests = list(dict.fromkeys(self._digest(key) for key in keys))
        with self.db.session() as session:
            # In one order whoever asks: two deletes of the same keys cannot deadlock on their rows.
            for digest in sorted(digests):
                if session.execute(delete(VirtualKey).where(VirtualKey.key_hash == digest)
                                   .execution_options(synchronize_session=False)).rowcount != 1:
                    raise _not_found()
        self._changed(*digests)
        return digests

    def list(self, owner=None, team_ids=None):
        """/key/list: every key's facts (no key itself); with `owner` or `team_ids` given, only the
        keys that user owns or those teams hold (what a caller that does not see everything sees)."""
        from sqlalchemy import false
        from sqlalchemy import or_

        from gateway.storage.models import VirtualKey
        with self.db.session() as session:
            query = session.query(VirtualKey)
            if owner is not None or team_ids is not None:
                query = query.filter(or_(VirtualKey.user_id == owner if owner is not None else false(),
                                         VirtualKey.team_id.in_(sorted(team_ids or ()))))
            return [_info(row) for row in query.order_by(VirtualKey.id)]

    def regenerate(self, key_or_hash):
        """/key/regenerate: same rules, a new key; the old one stops working (404 for a second
        regenerate of the same old key: only the answer that carries a key tells a working one)."""
        digest = self._digest(key_or_hash)
        key = new_key()
        with self.db.session() as session:
            answer = _info(self._change(session, digest, {"key_hash": hash_key(key),
                                                          "key_hint": f"sk-...{key[-4:]}"}))
        self._changed(digest)
        return {"key": key, **answer}

    def set_blocked(self, key_or_hash, blocked):
        """/key/block and /key/unblock."""
        digest = self._digest(key_or_hash)
        with self.db.session() as session:
            answer = _info(self._change(session, digest, {"blocked": blocked}))
        self._changed(digest)
        return answer


def _owners(session, values):
    """As LiteLLM: a key's team must exist (404), and a user_id not seen before becomes a user."""
    if values.get("team_id") is not None:
        require_team(session, values["team_id"])
    if values.get("user_id") is not None:
        ensure_user(session, values["user_id"])


def _not_found():
    return errors.NotFoundError("No such key (it may have just been regenerated or deleted).", param="key",
                                code="key_not_found")


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
