"""The spend ledger's database side: its statements, rows made valid before they are written, and
telling a row the database refuses (bad data: quarantine it) from a database that is down (retry).

Keys are named by their id (`gateway_keys.id`, kept across /key/regenerate), or by their hash for
rows journaled before rows carried the id.
"""

import math
from collections import namedtuple
from datetime import datetime
from datetime import timezone

INT_MAX = 2 ** 31 - 1  # the token columns are 32-bit integers on PostgreSQL
# Text columns of a row and how long each may be (filled from the table on first use).
_TEXT_LIMITS = []
_INT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "retries", "fallbacks")
_OPTIONAL = ("key_id", "key_hash", "key_alias", "user_id", "team_id", "organization_id", "end_user",
             "model_group", "deployment_id", "provider", "model", "error")


class Balance(namedtuple("Balance", "budget spent reserved whose", defaults=("Key",))):
    """A budget as a refused hold found it (USD), and whose it is ("Key", "Team `t1`", ...)."""

    @property
    def left(self):
        """What the budget still covers (calls in flight included)."""
        return self.budget - self.spent - self.reserved


def clean_row(row):
    """The row, made valid for both databases (in place): its text as `clean_text` makes it, token
    counts clamped to the column's range, a non-finite cost made 0, and every optional column
    present (a multi-row INSERT takes its columns from the first row)."""
    clean_text(row)
    for name in _INT_FIELDS:
        value = row.get(name)
        if value.__class__ is not int or not 0 <= value <= INT_MAX:
            row[name] = _clamp(value)
    cost = row.get("cost")
    if cost.__class__ is not float or not math.isfinite(cost):
        row["cost"] = _finite(cost)
    for name in _OPTIONAL:
        if name not in row:
            row[name] = None
    return row


def clean_text(row):
    """Text fields made valid (in place): NUL characters and lone surrogates replaced (PostgreSQL
    refuses the first; neither it nor orjson can encode the second), each cut to its column."""
    if not _TEXT_LIMITS:
        _load_limits()
    for name, limit in _TEXT_LIMITS:
        value = row.get(name)
        if value.__class__ is str and (len(value) > limit or "\x00" in value or not value.isascii()):
            row[name] = _clean_text(value, limit)
    return row


def _finite(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        value = float(value)
    except OverflowError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _clean_text(value, limit):
    value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    return value[:limit]


def _clamp(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return int(min(max(value, 0), INT_MAX))


def _load_limits():
    from gateway.storage.models import SpendRow
    for column in SpendRow.__table__.columns:
        length = getattr(column.type, "length", None)
        if length:
            _TEXT_LIMITS.append((column.name, length))


def refused(exc):
    """Whether the database refused the rows themselves (bad data: the same rows would fail again),
    as opposed to a connection or a server that is down or busy (retry later)."""
    from sqlalchemy import exc as sa_errors
    if isinstance(exc, sa_errors.DBAPIError):
        if exc.connection_invalidated:
            return False
        return isinstance(exc, (sa_errors.DataError, sa_errors.IntegrityError))
    if isinstance(exc, sa_errors.StatementError):  # raised before the database saw the statement
        return isinstance(exc.orig, (ValueError, TypeError, OverflowError, KeyError))
    # psycopg2: NUL in a string, text it cannot encode; SQLite: integers past 64 bits; a journaled
    # row missing a column.
    return isinstance(exc, (ValueError, TypeError, OverflowError, KeyError))


def describe(exc):
    """One short line about a database error: its class and the first line of the database's own
    message (never the statement or its parameters)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(exc).__name__}: {text[:200]!r}" if text else type(exc).__name__


def key_of(row_or_rules):
    """How the key is named in statements: ("id", its id) when known, else ("hash", its hash), or
    None (master key, no key)."""
    if isinstance(row_or_rules, dict):
        key_id, digest = row_or_rules.get("key_id"), row_or_rules.get("key_hash")
    else:
        key_id, digest = getattr(row_or_rules, "key_id", None), getattr(row_or_rules, "hash", None)
    if key_id is not None:
        return "id", key_id
    return ("hash", digest) if digest is not None else None


def level_targets(row):
    """The levels above a row's key that its cost rolls up to: [(kind, id)] for each one named."""
    return [(kind, row.get("end_user" if kind == "end_user" else f"{kind}_id")) for kind in LEVEL_KINDS
            if row.get("end_user" if kind == "end_user" else f"{kind}_id") is not None]


def died_row(start, ended):
    """The row of a call whose worker died before writing it: what its start entry told, status
    `worker_died`, no tokens, cost 0 (the usage died with the worker), estimated."""
    row = {name: start.get(name) for name in ("request_id", "key_id", "key_hash", "key_alias", "user_id",
                                              "team_id", "organization_id", "end_user", "call_type",
                                              "model_group", "stream")}
    started = start.get("start_time")
    started = datetime.fromisoformat(started) if isinstance(started, str) else started
    if not isinstance(started, datetime):
        started = ended
    row.update(deployment_id=None, provider=None, model=None, prompt_tokens=0, completion_tokens=0,
               total_tokens=0, cost=0.0, estimated=True, cache_hit=False, stream=bool(row["stream"]),
               status="worker_died", start_time=started, end_time=max(started, ended), retries=0, fallbacks=0,
               error="the worker serving the call died")
    return row


def placeholder_row(row):
    """What stands for a quarantined row in the ledger: its request id, key and cost only, so the
    key is still charged and a replay finds the request id taken."""
    now = datetime.now(timezone.utc)
    started = row.get("start_time") if isinstance(row.get("start_time"), datetime) else now
    ended = row.get("end_time") if isinstance(row.get("end_time"), datetime) else now
    key_id = row.get("key_id") if isinstance(row.get("key_id"), int) else None
    digest = row.get("key_hash") if isinstance(row.get("key_hash"), str) else None
    call_type = row.get("call_type") if isinstance(row.get("call_type"), str) else "unknown"
    cost = row.get("cost")
    cost = float(cost) if isinstance(cost, (int, float)) and math.isfinite(cost) and cost >= 0 else 0.0
    return clean_row({
        "request_id": str(row.get("request_id")), "key_id": key_id, "key_hash": digest, "key_alias": None,
        "user_id": None, "team_id": None, "organization_id": None, "end_user": None, "call_type": call_type,
        "model_group": None,
        "deployment_id": None, "provider": None, "model": None, "prompt_tokens": 0, "completion_tokens": 0,
        "total_tokens": 0, "cost": cost, "estimated": True, "cache_hit": False, "stream": False,
        "status": "quarantined", "start_time": started, "end_time": ended, "retries": 0, "fallbacks": 0,
        "error": None})


def revive(row):
    """A journaled row with its datetimes back, made valid."""
    for name in ("start_time", "end_time"):
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return clean_row(row)


def insert_new(connection, db, row):
    """Insert a row unless its request id is already there: whether it was new."""
    from gateway.storage.models import SpendRow
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    statement = insert(SpendRow.__table__).values(**row).on_conflict_do_nothing(index_elements=["request_id"])
    return connection.execute(statement).rowcount == 1


# Where budgets live: keys by id or by hash, and every level of the hierarchy by its id. A budget
# target is (kind, id); `key_of` names keys, `level_targets` the levels above them.
LEVEL_KINDS = ("user", "team", "organization", "end_user")


class Statements:
    """The ledger's statements, built once (SQLAlchemy Core, every value a bound parameter). Those
    on a budget come in one form per kind of target (a key by id or by hash, a user, team,
    organization or end user by its id), with the target's id as parameter `k`."""

    def __init__(self):
        from sqlalchemy import bindparam
        from sqlalchemy import case
        from sqlalchemy import delete
        from sqlalchemy import insert
        from sqlalchemy import or_
        from sqlalchemy import select
        from sqlalchemy import update

        from gateway.storage.models import BudgetHold
        from gateway.storage.models import EndUser
        from gateway.storage.models import Organization
        from gateway.storage.models import SpendRow
        from gateway.storage.models import Team
        from gateway.storage.models import User
        from gateway.storage.models import VirtualKey
        keys, holds = VirtualKey.__table__, BudgetHold.__table__
        self.insert_rows = insert(SpendRow.__table__)
        # A settled or expired hold is deleted, saying which budgets it held (None: its key's only,
        # as holds were written before levels existed).
        self.drop_hold = delete(holds).where(holds.c.request_id == bindparam("r")).returning(holds.c.levels)
        self.add_hold = insert(holds)
        # A budget lease (gateway/spend/leases.py): its calls' costs taken from it as their rows
        # commit; given back whole once drained.
        self.shrink_hold = (update(holds).where(holds.c.request_id == bindparam("r"))
                            .values(amount=holds.c.amount - bindparam("a")).returning(holds.c.levels))
        self.drop_lease = (delete(holds).where(holds.c.request_id == bindparam("r"))
                           .returning(holds.c.levels, holds.c.amount))
        self.add_spend, self.release, self.take, self.budget, self.reset = {}, {}, {}, {}, {}
        targets = [("id", keys, keys.c.id), ("hash", keys, keys.c.key_hash)]
        for kind, model in zip(LEVEL_KINDS, (User, Team, Organization, EndUser)):
            table = model.__table__
            targets.append((kind, table, table.c.organization_id if kind == "organization" else
                            table.c.team_id if kind == "team" else table.c.user_id))
        for kind, table, column in targets:
            c, this = table.c, column == bindparam("k")
            self.add_spend[kind] = update(table).where(this).values(spend=c.spend + bindparam("c"))
            self.release[kind] = update(table).where(this).values(
                reserved=c.reserved - bindparam("a"),
                holds=case((c.holds >= bindparam("n"), c.holds - bindparam("n")), else_=0))
            # strict: the call's worst case must fit beside the spend and every hold in flight.
            fits = c.spend + c.reserved + bindparam("a") <= c.max_budget
            # soft: ... or, when no other call holds this budget and some is left, it may overshoot
            # by this one call. Both in the one conditional UPDATE: a concurrent call re-checks the
            # row as the first left it, so only one can be the one past the budget.
            alone = (c.holds == 0) & (c.spend < c.max_budget)
            held = dict(reserved=c.reserved + bindparam("a"), holds=c.holds + bindparam("n"))
            for soft, admitted in ((False, fits), (True, or_(fits, alone))):
                self.take[kind, soft] = update(table).where(this, c.max_budget.is_not(None), admitted).values(**held)
            self.budget[kind] = select(c.spend, c.reserved, c.max_budget).where(this)
            self.reset[kind] = (update(table).where(this, c.budget_reset_at.is_not(None),
                                                    c.budget_reset_at <= bindparam("now"))
                                .values(spend=0.0, budget_reset_at=bindparam("next")))


_STATEMENTS = []


def sql():
    """The statements (built on first use, so SQLAlchemy loads only when spend is recorded)."""
    if not _STATEMENTS:
        _STATEMENTS.append(Statements())
    return _STATEMENTS[0]


def public(row):
    """A ledger row as /spend/logs shows it."""
    def iso(value):
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return {"request_id": row.request_id, "api_key": row.key_hash, "key_alias": row.key_alias,
            "user": row.user_id, "team_id": row.team_id, "organization_id": row.organization_id,
            "end_user": row.end_user, "call_type": row.call_type,
            "model_group": row.model_group, "model_id": row.deployment_id, "custom_llm_provider": row.provider,
            "model": row.model, "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens, "spend": row.cost, "estimated": row.estimated,
            "cache_hit": row.cache_hit, "stream": row.stream, "status": row.status,
            "retries": row.retries or 0, "fallbacks": row.fallbacks or 0, "error": row.error,
            "startTime": iso(row.start_time), "endTime": iso(row.end_time)}
