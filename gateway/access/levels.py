"""What the levels of the hierarchy (organizations, teams, users, end users) share: their request
schema (as strict as a key's: bounded numbers, no NUL, JSON of bounded depth and size), the values
they store, the facts they show, and the effective rules a key inherits from its team, organization
and user."""

import re
from datetime import datetime
from datetime import timezone

from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from gateway import errors
from gateway.access.keyvalues import LIMIT_MAX
from gateway.access.keyvalues import check_json
from gateway.access.keyvalues import no_nul
from gateway.access.keyvalues import readable
from gateway.config.parse import MAX_DURATION_SECONDS
from gateway.config.parse import duration_seconds
from gateway.errors import first_error
from gateway.routing.patterns import ALL_MODELS
from gateway.routing.patterns import ALL_TEAM_MODELS
from gateway.routing.patterns import admits

ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
ADMIN_ROLES = ("proxy_admin", "proxy_admin_viewer")  # see everything
TEAM_ROLES = ("admin", "user")
ORG_ROLES = ("org_admin", "internal_user", "internal_user_viewer")
ID_MAX = 255
# Only True and False: a string "false" must not read as true, nor a 1 as a block.
_BOOL = {"truthy": {True}, "falsy": {False}}


def identifier(**extra):
    """A client-chosen id or alias: free text up to 255 characters, never a NUL."""
    return fields.String(validate=[validate.Length(min=1, max=ID_MAX), no_nul], **extra)


def _limit():
    return fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=LIMIT_MAX))


class LevelSchema(Schema):
    """The fields every level has (LiteLLM's names; other fields are ignored)."""

    class Meta:
        unknown = INCLUDE

    models = fields.List(fields.String(validate=[validate.Length(max=ID_MAX), no_nul]), allow_none=True)
    max_budget = fields.Float(allow_none=True, allow_nan=False, validate=validate.Range(min=0))
    budget_duration = fields.String(allow_none=True, validate=[validate.Length(max=16), no_nul])
    tpm_limit = _limit()
    rpm_limit = _limit()
    max_parallel_requests = _limit()
    metadata = fields.Dict(allow_none=True)
    blocked = fields.Boolean(allow_none=True, **_BOOL)


class MemberSchema(Schema):
    """One member of a team (/team/member_add, members_with_roles): a user by id or email."""

    class Meta:
        unknown = INCLUDE

    role = fields.String(load_default="user", validate=validate.OneOf(TEAM_ROLES))
    user_id = identifier(allow_none=True)
    user_email = identifier(allow_none=True)


class OrgMemberSchema(MemberSchema):
    """One member of an organization (/organization/member_add)."""

    role = fields.String(load_default="internal_user", validate=validate.OneOf(ORG_ROLES))


_LEVEL_FIELDS = ("models", "max_budget", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests")


def validated(schema, data, json_fields=("metadata", "models")):
    """The body checked by `schema` (400 naming the first bad field), its JSON fields bounded (the
    one check of a management body: keys' and every level's)."""
    if not isinstance(data, dict):
        raise errors.BadRequestError("The request body must be a JSON object.")
    problems = schema.validate(data)
    if problems:
        param, text = first_error(problems)
        raise errors.BadRequestError(f"Invalid request: {param}: {text}", param=re.split(r"[.\[]", param)[0])
    for name in json_fields:
        if data.get(name) is not None:
            check_json(name, data[name])
    return data


def row_or_404(session, model, ident, what, param):
    """The row of `model` with primary key `ident`, or a 404 naming `what` and the `param` asked with."""
    row = session.get(model, ident)
    if row is None:
        raise not_found(what, param, ident)
    return row


def loaded(schema, data):
    """Validated, then loaded (defaults filled in), for the member schemas."""
    return schema.load(validated(schema, data))


def level_values(data, creating):
    """Column values for the level fields `data` names (all of them, defaulted, when `creating`)."""
    values = {name: data[name] for name in _LEVEL_FIELDS if name in data}
    if "metadata" in data or creating:
        values["meta"] = data.get("metadata") or {}
    if "blocked" in data or creating:
        values["blocked"] = bool(data.get("blocked"))
    if "budget_duration" in data or creating:  # a new period starts now
        values["budget_reset_at"] = budget_reset_at(data.get("budget_duration"))
    if creating:
        values.update(spend=0.0, reserved=0.0, holds=0)
    return values


def budget_reset_at(budget_duration):
    """When the first budget period ends ("30d": spend returns to 0 every 30 days), or None."""
    if not budget_duration:
        return None
    try:
        seconds = duration_seconds(budget_duration)
    except ValueError:
        seconds = None
    if seconds is None or seconds > MAX_DURATION_SECONDS:
        raise errors.BadRequestError("`budget_duration` must look like 30s, 30m, 30h or 30d.",
                                     param="budget_duration")
    from datetime import timedelta
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def iso(value):
    """An aware ISO 8601 time (SQLite hands datetimes back naive; they were stored in UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def level_info(row):
    """The level fields of a row, as every answer shows them (a stored value that cannot be shown is
    shown empty, as keys do)."""
    ok, models = readable("models", row.models)
    ok_meta, meta = readable("metadata", row.meta)
    return {"models": (models or []) if ok else [], "spend": row.spend or 0.0, "max_budget": row.max_budget,
            "budget_duration": row.budget_duration, "budget_reset_at": iso(row.budget_reset_at),
            "reserved": row.reserved or 0.0, "tpm_limit": row.tpm_limit, "rpm_limit": row.rpm_limit,
            "max_parallel_requests": row.max_parallel_requests, "metadata": (meta or {}) if ok_meta else {},
            "blocked": bool(row.blocked), "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def not_found(what, param, value):
    """404 with the envelope, naming the id asked for (truncated; it is the caller's own text)."""
    shown = str(value)[:200]
    return errors.NotFoundError(f"{what} not found: {param}={shown!r}.", param=param,
                                code=f"{what.lower().replace(' ', '_')}_not_found")


def required_id(data, name):
    """The id field `name` of a body: a non-empty string (400 otherwise)."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value or len(value) > ID_MAX or "\x00" in value:
        raise errors.BadRequestError(f"`{name}` is required: a string of 1 to {ID_MAX} characters.", param=name)
    return value


def id_list(data, name):
    """A non-empty list of ids (`team_ids`, `user_ids`, ...), without repeats, in a stable order."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, list) or not value or len(value) > 1000 or not all(
            isinstance(v, str) and v and len(v) <= ID_MAX and "\x00" not in v for v in value):
        raise errors.BadRequestError(f"`{name}` must be a non-empty list of ids.", param=name)
    return sorted(set(value))


# ---- what a key inherits --------------------------------------------------------------------------

def _names(models):
    """A level's models as a tuple, or None for "all the level above allows" (null, [], or a list
    holding `*`, `all-proxy-models` or `all-team-models`: no limit of the level's own)."""
    if not models:
        return None
    if not readable("models", models)[0]:
        return ()  # a stored value of the wrong shape allows nothing rather than all
    if any(m in ALL_MODELS or m == ALL_TEAM_MODELS for m in models):
        return None
    return tuple(models)


def _expanded(names, access_groups):
    """A models list with each access group replaced by its members (model names and wildcards)."""
    if access_groups is None:
        return names
    found = []
    for name in names:
        members = access_groups(name)
        found.extend(sorted(members) if members is not None else (name,))
    return tuple(dict.fromkeys(found))


def narrowed(inner, outer, access_groups=None):
    """What two models lists both allow, as one list: the names and wildcards of each that the other
    allows (`anthropic/claude-3` on one side stays when `anthropic/*` is on the other; two wildcards
    that only overlap give nothing: never more than both allow). Access groups are expanded through
    `access_groups` (name -> members or None); plain lists give their intersection, in `inner`'s order."""
    inner, outer = _expanded(inner, access_groups), _expanded(outer, access_groups)
    kept = [m for m in inner if admits(outer, m)] + [m for m in outer if admits(inner, m)]
    return tuple(dict.fromkeys(kept))


def effective_models(key_models, team, organization, user, access_groups=None):
    """A key's models within its team's within its organization's (and, for a key outside any team,
    within its user's): None is every model, () none. Each empty level allows what the one above does,
    as does a key's `all-team-models`; `*` and `all-proxy-models` set no limit of the level's own."""
    levels = [organization, team] if team is not None else [user]
    allowed = None
    for level in levels:
        names = _names(level.models) if level is not None else None
        if names is not None:
            allowed = names if allowed is None else narrowed(allowed, names, access_groups)
    own = key_models
    if own and any(m in ALL_MODELS or m == ALL_TEAM_MODELS for m in own):
        own = None
    if own is None:
        return allowed
    if allowed is None:
        return own
    return narrowed(own, allowed, access_groups)


def blocked_by(key_blocked, team_id, team, organization, user_id, user):
    """Which level blocks a key (None: none does): its own block, its team's, its organization's,
    its user's, or a team or user that no longer exists (deleted while the key was being made)."""
    if key_blocked:
        return "key"
    if team_id is not None:
        if team is None:
            return "team_deleted"
        if team.blocked:
            return "team"
        if organization is not None and organization.blocked:
            return "organization"
        if team.organization_id is not None and organization is None:
            return "organization_deleted"
    if user_id is not None:
        if user is None:
            return "user_deleted"
        if user.blocked:
            return "user"
    return None


# ---- rows made on the way ---------------------------------------------------------------------------

def new_level(**values):
    """Column values of a new level row: the given ones over the defaults."""
    now = datetime.now(timezone.utc)
    return {"models": None, "max_budget": None, "budget_duration": None, "budget_reset_at": None, "spend": 0.0,
            "reserved": 0.0, "holds": 0, "tpm_limit": None, "rpm_limit": None, "max_parallel_requests": None,
            "meta": {}, "blocked": False, "created_at": now, "updated_at": now, **values}


def insert_if_absent(session, model, values):
    """INSERT ... ON CONFLICT DO NOTHING (both databases): a row two requests make at once is made once.
    True when this call made it."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    columns = {model.__table__.c[getattr(model, name).property.columns[0].name]: value
               for name, value in values.items()}
    result = session.execute(insert(model.__table__).values(columns).on_conflict_do_nothing())
    return result.rowcount == 1


def ensure_user(session, user_id, user_email=None):
    """The user `user_id`, made (as an internal_user, no budget) when it does not exist yet, as
    LiteLLM does for a key's or a member's new user_id. True when it was made here."""
    from gateway.storage.models import User
    return insert_if_absent(session, User, new_level(user_id=user_id, user_email=user_email,
                                                     user_role="internal_user", user_alias=None))


def require_team(session, team_id):
    """The team row, or LiteLLM's 404 for a team that does not exist."""
    from gateway.storage.models import Team
    team = session.get(Team, team_id)
    if team is None:
        raise errors.NotFoundError(f"Team doesn't exist in db. Team={str(team_id)[:200]}. Create team via "
                                   "`/team/new` call.", param="team_id", code="team_not_found")
    return team
