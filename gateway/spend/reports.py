"""Spend reports: the ledger's rows (gateway_spend) read back, filtered and rolled up.

The ledger (ledger.py) writes rows; this module only reads them. Every roll-up is one SQL GROUP BY
(SQLAlchemy Core, values always bound, never SQL made from a caller's text) that runs on SQLite and
PostgreSQL alike; Python only nests the grouped rows into LiteLLM's answer shapes. Days are UTC
days. A key is named by its hash (`api_key`), its alias or its hint ("sk-...wxyz"), never itself.
"""

import math
from datetime import datetime
from datetime import time as day_time
from datetime import timedelta
from datetime import timezone

from sqlalchemy import String
from sqlalchemy import and_
from sqlalchemy import case
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from gateway.spend.statements import public
from gateway.storage.models import SpendRow
from gateway.storage.models import Team
from gateway.storage.models import VirtualKey

UNASSIGNED_TEAM = "Unassigned Team"  # /global/spend/report: rows of keys without a team (LiteLLM's label)
UNASSIGNED = "Unassigned"  # /global/spend/teams: the same, as LiteLLM labels it there
RECENT_DAYS = 30  # /global/spend/keys, /models, /teams and /end_users look back this far by default
END_USERS_LIMIT = 100  # /global/spend/end_users answers the top 100 (LiteLLM's number)
TOP_TEAMS = 10  # /global/spend/teams `total_spend_per_team`: the top 10


class utc_day(FunctionElement):  # noqa: N801  (an SQL function, named like one)
    """The UTC day of a time column as text, 'YYYY-MM-DD', in each dialect's own words.

    Both renderings are constant SQL around the column: the same text in SELECT and GROUP BY, which
    PostgreSQL needs to see that the two are one expression (bound parameters would differ)."""

    type = String()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element, compiler, **kw):
    # Times are stored in UTC (the ledger writes aware UTC times; SQLite keeps their digits).
    return "date(%s)" % compiler.process(element.clauses, **kw)


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element, compiler, **kw):
    # timestamptz AT TIME ZONE 'UTC' is the UTC wall time, whatever the session's TimeZone is.
    return "to_char(timezone('UTC', %s), 'YYYY-MM-DD')" % compiler.process(element.clauses, **kw)


def midnight(day):
    """A 'YYYY-MM-DD' day as LiteLLM writes a day bucket: '2024-04-30T00:00:00+00:00'."""
    return datetime.combine(datetime.strptime(day, "%Y-%m-%d").date(), day_time.min,
                            tzinfo=timezone.utc).isoformat()


def recent(now=None, days=RECENT_DAYS):
    """The start of the look-back window: UTC midnight `days` days before today (LiteLLM's
    CURRENT_DATE - INTERVAL '30 days')."""
    now = now or datetime.now(timezone.utc)
    return datetime.combine(now.astimezone(timezone.utc).date(), day_time.min, tzinfo=timezone.utc) \
        - timedelta(days=days)


def _sum(column):
    return func.coalesce(func.sum(column), 0)


def _key_terms(key_hash, table=SpendRow):
    """The two ways a row of `table` (the ledger or a roll-up) belongs to the key `key_hash` names
    now: its id (/key/regenerate keeps it) or the hash it was called with."""
    owner = select(VirtualKey.id).where(VirtualKey.key_hash == key_hash).scalar_subquery()
    return table.key_id == owner, table.key_hash == key_hash


def _key_filter(key_hash, table=SpendRow):
    """Rows of the key `key_hash` names now, by either of its _key_terms."""
    return or_(*_key_terms(key_hash, table))


def _day_terms(table, first, last, filters):
    """WHERE terms over a daily roll-up: 'YYYY-MM-DD' days from `first` to `last` (None: open) and
    equality on each filter given (a key by _key_filter)."""
    terms = [table.day >= first] if first is not None else []
    if last is not None:
        terms.append(table.day <= last)
    for name, value in filters.items():
        if value is not None:
            terms.append(_key_filter(value, table) if name == "key_hash" else getattr(table, name) == value)
    return terms


def _conditions(start=None, end=None, end_before=None, key_hash=None, user_id=None, team_id=None,
                organization_id=None, end_user=None, model=None, request_id=None, key_id=None, status=None,
                before=None):
    """WHERE terms over gateway_spend: start <= start_time <= end (or < end_before), equality on
    each filter given, and rows after `before` (start_time, request_id) in newest-first order."""
    terms = []
    if before is not None:
        moment, request_id_seen = before
        terms.append(or_(SpendRow.start_time < moment,
                         and_(SpendRow.start_time == moment, SpendRow.request_id < request_id_seen)))
    if start is not None:
        terms.append(SpendRow.start_time >= start)
    if end is not None:
        terms.append(SpendRow.start_time <= end)
    if end_before is not None:
        terms.append(SpendRow.start_time < end_before)
    if key_hash is not None:
        terms.append(_key_filter(key_hash))
    if key_id is not None:
        terms.append(SpendRow.key_id == key_id)
    if model is not None:
        terms.append(or_(SpendRow.model_group == model, SpendRow.model == model))
    for column, value in ((SpendRow.request_id, request_id), (SpendRow.user_id, user_id),
                          (SpendRow.team_id, team_id), (SpendRow.organization_id, organization_id),
                          (SpendRow.end_user, end_user), (SpendRow.status, status)):
        if value is not None:
            terms.append(column == value)
    return terms


def _rows(db, query):
    with db.session() as session:
        return session.execute(query).all()


# ---- /spend/logs ---------------------------------------------------------------------------------

def logs(db, limit=1000, **filters):
    """Ledger rows, newest first, as /spend/logs shows them. Filters: start, end, key_hash, key_id,
    model (its group or the model that served it), request_id, user_id, team_id, organization_id,
    end_user, status, before (see _conditions)."""
    # A key (its id, or the hash it was called with) and a model (its group, or the provider model)
    # each match one of two columns: one query per combination, each walking its own index newest
    # first with the limit, merged here (an OR of two columns would sort every matching row).
    key_hash, model = filters.pop("key_hash", None), filters.pop("model", None)
    choices = [[]]
    if key_hash is not None:
        choices = [c + [term] for c in choices for term in _key_terms(key_hash)]
    if model is not None:
        choices = [c + [term] for c in choices for term in (SpendRow.model_group == model, SpendRow.model == model)]
    terms = _conditions(**filters)
    found = {}
    with db.session() as session:
        for extra in choices:
            query = (select(SpendRow).where(*terms, *extra)
                     .order_by(SpendRow.start_time.desc(), SpendRow.request_id.desc()).limit(limit))
            for row in session.scalars(query):
                found[row.request_id] = row
    newest = sorted(found.values(), key=lambda row: (_utc(row.start_time), row.request_id), reverse=True)
    return [public(row) for row in newest[:limit]]


def _utc(moment):
    """An aware UTC time from a stored one (SQLite gives its digits back naive, in UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# ---- /global/spend/report ------------------------------------------------------------------------

def _team_name(team_id, alias):
    """A team as the report names it: its alias, else its id, else LiteLLM's "Unassigned Team"."""
    return alias or team_id or UNASSIGNED_TEAM


def _by_day(rows, group_key, entry, collection):
    """Nest grouped rows (day, *group, model, api_key, spend, tokens) as LiteLLM's daily report:
    [{group_by_day, <collection>: [{...entry, total_spend, metadata: [{model, api_key, spend,
    total_tokens}]}]}], days ascending, groups by spend (largest first)."""
    days = {}
    for row in rows:
        groups = days.setdefault(row.day, {})
        group = groups.setdefault(group_key(row), {**entry(row), "metadata": []})
        group["metadata"].append({"model": row.model, "api_key": row.api_key, "spend": float(row.spend),
                                  "total_tokens": int(row.tokens)})
    answer = []
    for day in sorted(days):
        groups = []
        for group in days[day].values():
            group["metadata"].sort(key=lambda item: (-item["spend"], item["model"] or "", item["api_key"] or ""))
            metadata = group.pop("metadata")
            groups.append({**group, "total_spend": math.fsum(item["spend"] for item in metadata),
                           "metadata": metadata})
        groups.sort(key=lambda group: -group["total_spend"])
        answer.append({"group_by_day": midnight(day), collection: groups})
    return answer


class _Rows:
    """Reports read from the ledger's rows: any range, any filter."""

    def __init__(self, start, end, filters):
        self.table, self.cost, self.day = SpendRow, SpendRow.cost, utc_day(SpendRow.start_time)
        self.terms = _conditions(start=start, end=end, **filters)


class _Days:
    """Reports read from the daily roll-up (gateway_spend_daily, spend/rollup.py): whole UTC days
    and the filters it has columns for, with the same answers as _Rows."""

    FILTERS = frozenset({"key_hash", "user_id", "team_id", "organization_id"})

    def __init__(self, start, end, filters):
        from gateway.storage.models import SpendDaily
        self.table = t = SpendDaily
        self.day, self.cost = t.day, t.spend
        self.terms = _day_terms(t, _utc_day_of(start), _utc_day_of(end), filters)

    @classmethod
    def answers(cls, start, end, filters):
        from gateway.spend.rollup import whole_days
        return whole_days(start, end) and all(v is None or k in cls.FILTERS for k, v in filters.items())


def _utc_day_of(moment):
    return moment.astimezone(timezone.utc).date().isoformat() if moment is not None else None


def _source(start, end, filters):
    """Where a report over [start, end] with `filters` reads: the daily roll-up when it can answer
    exactly, else the rows."""
    return (_Days if _Days.answers(start, end, filters) else _Rows)(start, end, filters)


def _daily(db, src, names, teams=True):
    """Spend and tokens per (UTC day, *names, model, key hash) from `src` (`teams`: the rows' teams
    joined, for their aliases). `names`: columns of the source, by name (labelled so)."""
    t = src.table
    columns = [getattr(t, "end_user" if name == "customer" else name).label(name) for name in names]
    keys = [src.day.label("day"), *columns, t.model.label("model"), t.key_hash.label("api_key")]
    if teams:
        keys.insert(len(columns) + 1, Team.team_alias.label("team_alias"))
    query = select(*keys, _sum(src.cost).label("spend"), _sum(t.total_tokens).label("tokens"))
    if teams:
        query = query.select_from(t).outerjoin(Team, Team.team_id == t.team_id)
    return _rows(db, query.where(*src.terms).group_by(*keys))


def report_by_team(db, start, end, **filters):
    """/global/spend/report?group_by=team: each UTC day, each team's spend and its (model, key)
    breakdown. Teams are named by alias (else id); keys without a team are LiteLLM's
    "Unassigned Team"."""
    rows = _daily(db, _source(start, end, filters), ["team_id"])
    return _by_day(rows, lambda row: row.team_id,
                   lambda row: {"team_name": _team_name(row.team_id, row.team_alias), "team_id": row.team_id},
                   "teams")


def report_by_customer(db, start, end, **filters):
    """/global/spend/report?group_by=customer: each UTC day, each end user's (the call's `user`)
    spend and its (model, key) breakdown."""
    rows = _daily(db, _Rows(start, end, filters), ["customer"], teams=False)  # end users: not in the roll-up
    return _by_day(rows, lambda row: row.customer, lambda row: {"customer": row.customer}, "customers")


def report_by_team_and_customer(db, start, end, **filters):
    """/global/spend/report?team_id=..&customer_id=..: each UTC day, each (team, end user)."""
    rows = _daily(db, _Rows(start, end, filters), ["team_id", "customer"])
    return _by_day(rows, lambda row: (row.team_id, row.customer),
                   lambda row: {"team_name": _team_name(row.team_id, row.team_alias), "team_id": row.team_id,
                                "customer": row.customer},
                   "teams_customers")


def report_by_key(db, start, end, **filters):
    """/global/spend/report?group_by=api_key (and ?api_key= / ?internal_user_id=): each key's cost
    and tokens over the range, with a per-model breakdown; largest cost first."""
    src = _source(start, end, filters)
    t = src.table
    keys = [t.key_hash.label("api_key"), t.model.label("model")]
    query = (select(*keys, _sum(src.cost).label("cost"), _sum(t.prompt_tokens).label("input"),
                    _sum(t.completion_tokens).label("output"))
             .where(*src.terms).group_by(*keys))
    by_key = {}
    for row in _rows(db, query):
        by_key.setdefault(row.api_key, []).append({
            "model": row.model, "total_cost": float(row.cost), "total_input_tokens": int(row.input),
            "total_output_tokens": int(row.output)})
    answer = []
    for api_key, details in by_key.items():
        details.sort(key=lambda item: (-item["total_cost"], item["model"] or ""))
        answer.append({"api_key": api_key, "total_cost": math.fsum(item["total_cost"] for item in details),
                       "total_input_tokens": sum(item["total_input_tokens"] for item in details),
                       "total_output_tokens": sum(item["total_output_tokens"] for item in details),
                       "model_details": details})
    answer.sort(key=lambda item: (-item["total_cost"], item["api_key"] or ""))
    return answer


# ---- /spend/daily ----------------------------------------------------------------------------------

DAILY_GROUPS = {"team": "team_id", "key": "key_hash", "model": "model", "user": "user_id",
                "organization": "organization_id", "end_user": "end_user"}
TOP_GROUPS = 100


def daily_totals(db, first, last, group_by, limit=TOP_GROUPS, **filters):
    """/spend/daily: spend, tokens and calls per UTC day from `first` to `last` ('YYYY-MM-DD') and
    per group (`group_by`: DAILY_GROUPS), the `limit` largest groups with their spend per day and
    the rest summed, from the daily roll-ups whatever the ledger's size (one GROUP BY over days x
    groups; for end users, who may be many, their totals first, then the largest ones' days).
    Filters (key_hash, user_id, team_id, organization_id, model) narrow it; end users have a roll-up
    of their own, without them."""
    from gateway.storage.models import SpendDaily
    from gateway.storage.models import SpendDailyEndUser
    t = SpendDailyEndUser if group_by == "end_user" else SpendDaily
    column = getattr(t, DAILY_GROUPS[group_by])
    terms = _day_terms(t, first, last, filters)
    sums = (_sum(t.spend).label("spend"), _sum(t.total_tokens).label("tokens"), _sum(t.requests).label("requests"))
    days, groups = {}, {}
    if group_by != "end_user":  # one pass over days x groups: keys, teams, models... are few
        rows = _rows(db, select(t.day, column.label("group"), *sums).where(*terms).group_by(t.day, column))
    else:  # end users may be many: their totals, then the days of the largest only (below)
        rows = _rows(db, select(column.label("group"), *sums).where(*terms).group_by(column))
        for row in _rows(db, select(t.day, *sums).where(*terms).group_by(t.day)):
            days[row.day] = [[float(row.spend)], int(row.tokens), int(row.requests)]
    for row in rows:
        spend, tokens, requests = float(row.spend), int(row.tokens), int(row.requests)
        for total in ((groups.setdefault(row.group, [[], 0, 0, {}]),) if group_by == "end_user" else
                      (days.setdefault(row.day, [[], 0, 0]), groups.setdefault(row.group, [[], 0, 0, {}]))):
            total[0].append(spend)
            total[1] += tokens
            total[2] += requests
        if group_by != "end_user":
            groups[row.group][3][row.day] = spend

    def totals(parts):
        return {"spend": math.fsum(parts[0]), "total_tokens": parts[1], "requests": parts[2]}
    ranked = sorted(({"group": group, **totals(parts), "days": parts[3]} for group, parts in groups.items()),
                    key=lambda g: (-g["spend"], g["group"] is None, str(g["group"])))
    top, rest = ranked[:limit], ranked[limit:]
    if group_by == "end_user" and top:
        named = [g["group"] for g in top if g["group"] is not None]
        chosen = or_(column.in_(named), column.is_(None)) if len(named) < len(top) else column.in_(named)
        found = {g["group"]: g for g in top}
        for row in _rows(db, select(t.day, column.label("group"), sums[0]).where(*terms, chosen)
                         .group_by(t.day, column)):
            found[row.group]["days"][row.day] = float(row.spend)
    _name(db, group_by, top)
    others = None
    if rest:
        others = {"groups": len(rest), "spend": math.fsum(g["spend"] for g in rest),
                  "total_tokens": sum(g["total_tokens"] for g in rest), "requests": sum(g["requests"] for g in rest)}
    everything = totals([[s for parts in days.values() for s in parts[0]], sum(p[1] for p in days.values()),
                         sum(p[2] for p in days.values())])
    return {"group_by": group_by, "start_date": first, "end_date": last,
            "days": [{"day": day, **totals(parts)} for day, parts in sorted(days.items())], "groups": top,
            "others": others, **everything}


def _name(db, group_by, groups):
    """Each team group's alias, each key group's alias or hint ("sk-...wxyz"), as `name` (one query)."""
    ids = [g["group"] for g in groups if g["group"] is not None]
    if group_by not in ("team", "key") or not ids:
        return
    if group_by == "team":
        query = select(Team.team_id, Team.team_alias).where(Team.team_id.in_(ids))
    else:
        query = select(VirtualKey.key_hash, func.coalesce(VirtualKey.key_alias, VirtualKey.key_hint)).where(
            VirtualKey.key_hash.in_(ids))
    names = dict(_rows(db, query))
    for group in groups:
        group["name"] = names.get(group["group"])


# ---- /global/spend/keys, /models, /teams, /end_users ---------------------------------------------

def top_keys(db, start, end=None, limit=None):
    """/global/spend/keys: each key's spend since `start` (largest first, at most `limit`), with its
    team, alias and name (its hint, "sk-...wxyz"; its hash when the key is gone or was regenerated)."""
    joined = or_(VirtualKey.id == SpendRow.key_id,
                 and_(SpendRow.key_id.is_(None), VirtualKey.key_hash == SpendRow.key_hash))
    total = _sum(SpendRow.cost).label("total_spend")
    hint = func.max(case((VirtualKey.key_hash == SpendRow.key_hash, VirtualKey.key_hint)))
    query = (select(SpendRow.key_hash.label("api_key"), total,
                    func.coalesce(func.max(VirtualKey.team_id), func.max(SpendRow.team_id), "").label("team_id"),
                    func.coalesce(func.max(VirtualKey.key_alias), func.max(SpendRow.key_alias), "").label("key_alias"),
                    func.coalesce(hint, SpendRow.key_hash).label("key_name"))
             .select_from(SpendRow).outerjoin(VirtualKey, joined)
             .where(*_conditions(start=start, end=end)).group_by(SpendRow.key_hash)
             .order_by(total.desc(), SpendRow.key_hash).limit(limit))
    return [{"api_key": row.api_key, "total_spend": float(row.total_spend), "team_id": row.team_id,
             "key_alias": row.key_alias, "key_name": row.key_name, "last_refreshed_at": None}
            for row in _rows(db, query)]


def top_models(db, start, end=None, limit=10):
    """/global/spend/models: each model's spend since `start`, largest first, at most `limit`."""
    total = _sum(SpendRow.cost).label("total_spend")
    query = (select(SpendRow.model.label("model"), total).where(*_conditions(start=start, end=end))
             .group_by(SpendRow.model).order_by(total.desc(), SpendRow.model).limit(limit))
    return [{"model": row.model, "total_spend": float(row.total_spend)} for row in _rows(db, query)]


def teams_daily(db, start, end=None):
    """/global/spend/teams: spend per UTC day per team since `start`, as LiteLLM's admin UI reads it:
    {"daily_spend": [{"date", <team>: spend, ...}], "teams": [names], "total_spend_per_team":
    [{"team_id": name, "total_spend"}] (the top 10)}. A team is named by its alias, else its id;
    rows without a team are "Unassigned". Sums are exact (LiteLLM rounds them to cents)."""
    day = utc_day(SpendRow.start_time).label("day")
    keys = [day, SpendRow.team_id, Team.team_alias]
    query = (select(*keys, _sum(SpendRow.cost).label("spend")).select_from(SpendRow)
             .outerjoin(Team, Team.team_id == SpendRow.team_id)
             .where(*_conditions(start=start, end=end)).group_by(*keys))
    by_day, totals = {}, {}
    for row in _rows(db, query):
        name = row.team_alias or row.team_id or UNASSIGNED
        spend = float(row.spend)
        # Two teams may share an alias: their spend is added, never overwritten.
        by_day.setdefault(row.day, {}).setdefault(name, []).append(spend)
        totals.setdefault(name, []).append(spend)
    # "date" comes first and is never overwritten (a team aliased "date" shows in the totals only).
    daily = [{"date": d, **{name: math.fsum(parts) for name, parts in by_day[d].items() if name != "date"}}
             for d in sorted(by_day)]
    ranked = sorted(((math.fsum(parts), name) for name, parts in totals.items()), key=lambda item: (-item[0], item[1]))
    return {"daily_spend": daily, "teams": sorted(totals),
            "total_spend_per_team": [{"team_id": name, "total_spend": spend} for spend, name in ranked[:TOP_TEAMS]]}


def end_users(db, start, end_before, key_hash=None, limit=END_USERS_LIMIT):
    """/global/spend/end_users: each end user's calls and spend in [start, end_before), largest
    spend first, at most `limit` (optionally of one key's calls)."""
    total = _sum(SpendRow.cost).label("total_spend")
    query = (select(SpendRow.end_user.label("end_user"), func.count().label("total_count"), total)
             .where(*_conditions(start=start, end_before=end_before, key_hash=key_hash))
             .group_by(SpendRow.end_user).order_by(total.desc(), SpendRow.end_user).limit(limit))
    return [{"end_user": row.end_user, "total_count": int(row.total_count), "total_spend": float(row.total_spend)}
            for row in _rows(db, query)]
