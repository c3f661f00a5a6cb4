"""The ledger's daily roll-ups: spend, tokens and calls per UTC day and (key, user, team,
organization, model) in gateway_spend_daily, and per UTC day and end user in
gateway_spend_daily_end_users (end users can be many more), added in the same transaction that
inserts the ledger's rows (ledger.py `_commit`, with only the rows that were new: a replayed
journal adds nothing twice), so they hold exactly what gateway_spend holds.

Reports over whole UTC days (every date-only range: /spend/daily, which the admin UI's Usage page
reads, and /global/spend/report with dates, unless it needs the end users) read them: a month of a
million rows is a few tens of thousands of roll-up rows. A range that starts or ends inside a day
reads the rows themselves (reports.py)."""

import hashlib
from datetime import time as day_time
from datetime import timezone

# Each roll-up: its table and the ledger columns it keeps apart.
ROLLUPS = {"gateway_spend_daily": ("key_id", "key_hash", "user_id", "team_id", "organization_id", "model"),
           "gateway_spend_daily_end_users": ("end_user",)}
SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "spend")


def day_of(moment):
    """The UTC day of a ledger row's start_time, 'YYYY-MM-DD' (a naive time is UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.date().isoformat()


def dims_of(values):
    """A roll-up row's key: sha256 over its dimensions (None and "" kept apart)."""
    text = "\x1f".join("\x1e" if v is None else str(v) for v in values)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def entries(rows, dimensions, found=None):
    """Roll-up increments of ledger rows (dicts as inserted): one per (day, dimensions); added to
    `found` ({(day, values): entry}) when given, to sum many batches before one put()."""
    found = {} if found is None else found
    for row in rows:
        values = tuple(row.get(name) for name in dimensions)
        day = day_of(row["start_time"])
        entry = found.get((day, values))
        if entry is None:
            entry = found[day, values] = {"day": day, "dims": dims_of(values), **dict(zip(dimensions, values)),
                                          "requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                          "total_tokens": 0, "spend": 0.0}
        entry["requests"] += 1
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            entry[name] += int(row.get(name) or 0)
        entry["spend"] += float(row.get("cost") or 0.0)
    return list(found.values())


_UPSERT = {}


def upsert(dialect, name):
    """INSERT ... ON CONFLICT (day, dims) DO UPDATE adding the increments, into roll-up `name`
    (built once per dialect: each commit only binds its values)."""
    if (dialect, name) not in _UPSERT:
        from gateway.storage.models import Base
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        table = Base.metadata.tables[name]
        statement = insert(table)
        _UPSERT[dialect, name] = statement.on_conflict_do_update(
            index_elements=[table.c.day, table.c.dims],
            set_={column: table.c[column] + statement.excluded[column] for column in SUMS})
    return _UPSERT[dialect, name]


def put(connection, name, increments):
    """Add `increments` (entries(), unique per day and dimensions) to roll-up `name`."""
    if increments:
        connection.execute(upsert(connection.dialect.name, name), increments)


def add(connection, rows):
    """Add ledger rows just inserted on `connection` (in its transaction) to every roll-up."""
    if rows:
        for name, dimensions in ROLLUPS.items():
            put(connection, name, entries(rows, dimensions))


def whole_days(start, end):
    """Whether [start, end] covers whole UTC days (a date-only range: 00:00 to 23:59:59.999999), so
    the roll-up answers it exactly; None at either end is open."""
    def at(moment, clock):
        return moment is None or (moment.astimezone(timezone.utc).timetz().replace(tzinfo=None) == clock)
    return at(start, day_time.min) and at(end, day_time.max)
