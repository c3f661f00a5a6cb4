"""Budgets a call is held against, and their periods: which budgets (a key by id or hash, its user,
team, organization, end user) a call must fit; taking its worst case from all of them in one
transaction or from none; giving a settled or expired hold back to each; starting a budget period
over once it has ended. The ledger (gateway/spend/ledger.py) calls these when it holds, settles,
sweeps and commits; the statements are gateway/spend/statements.py's."""

import logging
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from gateway import errors
from gateway.spend.statements import LEVEL_KINDS
from gateway.spend.statements import Balance
from gateway.spend.statements import key_of
from gateway.spend.statements import sql as _sql

log = logging.getLogger("gateway.spend.meter")

TARGET_KINDS = frozenset(("id", "hash") + LEVEL_KINDS)  # what a budget can be named by (statements.py)
LEASE_PREFIX = "lease:"  # the request id of a budget lease's hold row (gateway/spend/leases.py)


def now():
    """The time holds expire by (UTC)."""
    return datetime.now(timezone.utc)


class _Refused(Exception):
    """A budget refused a hold: the transaction that took the others is rolled back."""

    def __init__(self, target, balance):
        super().__init__(target)
        self.target, self.balance = target, balance


def targets_of(rules, levels):
    """[(target, budget period seconds or None, whose)] of every budget a call must fit: its key's
    when it has one, and each level's with a max_budget."""
    targets = []
    key = key_of(rules)
    if rules is not None and rules.max_budget is not None and key is not None:
        targets.append((key, reset_seconds(rules.budget_duration), "Key"))
    for level in levels:
        if level.max_budget is not None:
            whose = f"{level.kind.replace('_', ' ').capitalize()} `{str(level.id)[:100]}`"
            targets.append(((level.kind, level.id), reset_seconds(level.budget_duration), whose))
    return targets


def take(db, soft, targets, request_id, amount, seconds, rules):
    """One transaction: take the amount from every target, or from none. None when admitted, else
    (target, Balance) of the target that refused."""
    sql = _sql()
    counted = 1 if amount > 0 else 0  # a hold of nothing holds no budget
    held = []
    try:
        with db.engine.begin() as connection:
            for target, period, whose in targets:
                kind, who = target
                if period:
                    reset_if_due(connection, target, period)
                if connection.execute(sql.take[kind, soft], {"k": who, "a": amount, "n": counted}).rowcount:
                    held.append(target)
                    continue
                found = connection.execute(sql.budget[kind], {"k": who}).first()
                if found is None and kind in ("id", "hash"):
                    raise errors.AuthenticationError("This key has been deleted.", code="key_deleted")
                if found is None or found.max_budget is None:
                    continue  # the level or its budget is gone since it was cached: nothing to hold
                raise _Refused(target, Balance(found.max_budget, found.spend, found.reserved, whose))
            if counted and held:
                connection.execute(sql.add_hold, {
                    "request_id": request_id, "key_id": rules.key_id if rules is not None else None,
                    "key_hash": rules.hash if rules is not None else None, "amount": amount,
                    "levels": [list(target) for target in held],
                    "expires_at": now() + timedelta(seconds=seconds)})
    except _Refused as refusal:  # rolled back: none of the budgets holds anything for the call
        return refusal.target, refusal.balance
    return None


def sweep(db, target=None):
    """Release expired holds (their worker died mid-call); returns how many. `target`: only holds of
    that key (as key_of names it); a level's target sweeps every expired hold."""
    from sqlalchemy import select

    from gateway.storage.models import BudgetHold
    holds = BudgetHold.__table__
    query = (select(holds.c.request_id, holds.c.key_id, holds.c.key_hash, holds.c.amount)
             .where(holds.c.expires_at < now()))
    if target is not None and target[0] in ("id", "hash"):
        query = query.where((holds.c.key_id if target[0] == "id" else holds.c.key_hash) == target[1])
    released = 0
    with db.engine.begin() as connection:
        for request_id, key_id, digest, amount in connection.execute(query.limit(500)).all():
            held = connection.execute(_sql().drop_hold, {"r": request_id}).first()
            if held is not None:
                # a lease (gateway/spend/leases.py) counts as one hold whatever is left of it
                counted = 1 if request_id.startswith(LEASE_PREFIX) else None
                for each in held_targets(held.levels, {"key_id": key_id, "key_hash": digest}):
                    release(connection, each, amount, counted)
                released += 1
    if released:
        log.warning("released %d expired budget hold(s)", released)
    return released


def release(connection, key, amount, counted=None):
    """Give a settled or expired hold back to its budget; `counted`: how many holds it was (None:
    one unless it held nothing, as `take` counts them)."""
    kind, who = key
    counted = (1 if amount > 0 else 0) if counted is None else counted
    connection.execute(_sql().release[kind], {"k": who, "a": amount, "n": counted})


def held_targets(levels, row):
    """The budgets a hold row held: its `levels` list, or (written before levels existed) its key."""
    if levels:
        return [tuple(target) for target in levels
                if isinstance(target, (list, tuple)) and len(target) == 2 and target[0] in TARGET_KINDS]
    key = key_of(row)
    return [key] if key is not None else []


def periods(rules, levels):
    """The budget periods a call's cost lands in, as journaled: [[kind, id, seconds], ...] for its
    key and each level that has a budget_duration (None when none has)."""
    periods = []
    key = key_of(rules)
    seconds = reset_seconds(rules.budget_duration) if rules is not None else None
    if key is not None and seconds:
        periods.append([key[0], key[1], seconds])
    for level in levels:
        seconds = reset_seconds(level.budget_duration)
        if seconds:
            periods.append([level.kind, level.id, seconds])
    return periods or None


def period_targets(entry):
    """((kind, id), seconds) of each budget period an entry's cost lands in; a journal written before
    levels existed holds the key's seconds alone."""
    reset = entry.reset
    if isinstance(reset, (int, float)) and not isinstance(reset, bool):
        key = key_of(entry.row)
        return [(key, reset)] if key is not None and reset > 0 else []
    if isinstance(reset, list):
        return [((item[0], item[1]), item[2]) for item in reset
                if isinstance(item, list) and len(item) == 3 and item[0] in TARGET_KINDS
                and isinstance(item[2], (int, float)) and item[2] > 0]
    return []


def reset_seconds(budget_duration):
    """A budget period in seconds, or None."""
    if not budget_duration:
        return None
    from gateway.access.keys import parse_duration
    try:
        delta = parse_duration(budget_duration)
    except errors.GatewayError:
        return None
    return delta.total_seconds() if delta else None


def reset_if_due(connection, key, seconds):
    """Start a new budget period when the current one is over (once, whichever worker sees it)."""
    at = now()
    kind, who = key
    connection.execute(_sql().reset[kind], {"k": who, "now": at, "next": at + timedelta(seconds=seconds)})
