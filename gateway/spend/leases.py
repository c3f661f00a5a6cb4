"""Budget leases: a worker's slice of a budget, so that most budgeted calls hold in memory.

A call that must fit a budget holds its worst case before any upstream work (gateway/spend/budgets.py).
Taken in the database, that hold is a write transaction per call, and every worker queues on the
budget's row. A lease takes a slice of the budget's headroom in one such transaction, as a hold row
of its own (`gateway_budget_holds`, request id `lease:<hex>`), and the worker then holds its calls'
worst cases from the slice in memory:

* A lease is LEASE_SHARE of the headroom (max_budget - spend - reserved) when it is taken, and is
  taken only when that covers at least LEASE_MIN_CALLS of the call's worst case. A budget near its
  end is held call by call in the database, as before: a small budget admits exactly what it did.
* A lease admits calls for `lease_seconds` (general_settings.budget_lease_seconds, 0 turns leases
  off), or until the budget's max_budget changes; then it drains: its calls in flight finish.
* Each call's row takes its cost from the lease in the commit that writes it (spend up, the lease
  and the budget's `reserved` down by the same amount), so spend + reserved in the database never
  counts less than the workers may still spend: a lease cannot overshoot a budget by more than
  call-by-call holds would. A drained lease whose rows are all committed is deleted and its
  remainder given back, in a transaction after that commit.
* The price: a call can be refused while other workers' leases still hold free budget (each at
  most LEASE_SHARE of the headroom when it was taken), for at most lease_seconds plus their
  longest call in flight; once the headroom is under LEASE_MIN_CALLS / LEASE_SHARE worst cases,
  no new lease is taken.
* A lease is journaled when it is taken (and carried into each new journal while it lives), so
  whoever replays the journal of a worker that died gives its leases back once its rows are
  committed; failing that, a lease expires like any hold: budget_hold_seconds after it stopped
  admitting, the sweep (budgets.sweep) gives the remainder back.

Leases are used only by the gateway's gevent workers (the asynchronous ledger), whose rows are
committed by the flusher; elsewhere every call holds in the database.
"""

import time
import uuid
from datetime import timedelta

from gateway.spend import budgets
from gateway.spend.budgets import LEASE_PREFIX
from gateway.spend.statements import sql as _sql

LEASE_SHARE = 1 / 16  # of the headroom, per lease
LEASE_MIN_CALLS = 8  # a lease covers at least this many of the call's worst case, else no lease


class Lease:
    """One slice of one budget held by this worker."""

    __slots__ = ("id", "target", "budget", "capacity", "used", "calls", "pending", "admit_until", "stuck")

    def __init__(self, lease_id, target, budget, amount, admit_until):
        self.id, self.target, self.budget = lease_id, target, budget
        self.capacity = amount  # what it covers now: taken, less the costs settled here
        self.used = 0.0  # worst cases of its calls in flight
        self.calls = 0  # its calls in flight
        self.pending = 0  # its rows queued, not yet committed
        self.admit_until = admit_until  # time.monotonic() after which it admits no call
        self.stuck = False  # a row of it was set aside (database down): left to expire, never returned

    def admits(self, amount, now):
        return now < self.admit_until and self.capacity - self.used >= amount


class _NoLease(Exception):
    """A budget has too little headroom for a lease: the transaction is rolled back."""


class Leases:
    """This worker's leases, by budget target ((kind, id) as budgets.targets_of names them)."""

    def __init__(self, lease_seconds):
        self.lease_seconds = lease_seconds
        self.active = {}  # target -> the lease that admits its calls now
        self.all = {}  # lease id -> Lease, until it is given back
        self.calls = {}  # request id -> the leases its hold came from
        self._taking = None  # a lock: one greenlet at a time takes new leases
        self.fresh = []  # ids of the leases taken since the ledger last looked (it journals them)

    def hold(self, open_db, targets, request_id, amount, seconds, rules, levels):
        """Hold `amount` from a lease of every target, taking leases where needed: True when held,
        False when a target has no headroom for a lease (the caller holds in the database)."""
        if self.lease_seconds <= 0 or amount <= 0:
            return False
        limits = _budgets(rules, levels)
        for _attempt in range(3):
            # Choosing and taking from the leases runs without I/O, so no other greenlet of this
            # worker can take from them in between; after waiting for new leases, choose again.
            chosen, missing = self._choose(targets, amount, limits)
            if not missing:
                for lease in chosen:
                    lease.used += amount
                    lease.calls += 1
                self.calls[request_id] = chosen
                return True
            if self._taking is None:
                from gevent.lock import Semaphore
                self._taking = Semaphore()
            with self._taking:
                if not self._take(open_db, missing, amount, seconds, rules, limits):
                    return False
        return False  # other greenlets used up every new lease at once: hold in the database

    def _choose(self, targets, amount, limits):
        """([leases that admit the call], [targets that need a new lease])."""
        now = time.monotonic()
        chosen, missing = [], []
        for target, period, whose in targets:
            lease = self.active.get(target)
            if lease is not None and lease.budget != limits.get(target):
                del self.active[target]  # the budget changed: it drains, admitting no more
                lease = None
            if lease is not None and lease.admits(amount, now):
                chosen.append(lease)
            else:
                missing.append((target, period, whose))
        return chosen, missing

    def _take(self, open_db, missing, amount, seconds, rules, limits):
        """New leases for the `missing` targets that still need one, in one transaction: False
        when a target has too little headroom (none of them is taken)."""
        _chosen, again = self._choose(missing, amount, limits)
        if not again:  # another greenlet took them while this one waited
            return True
        try:
            rows = take(open_db(), again, amount, seconds + self.lease_seconds, rules)
        except _NoLease:
            return False
        admit_until = time.monotonic() + self.lease_seconds
        for lease_id, target, _stored, chunk in rows:
            # Its budget as this worker's cached rules see it: a lease drains when they change (a
            # budget update reaching this worker), not while the cache still shows the old value.
            lease = Lease(lease_id, target, limits.get(target), chunk, admit_until)
            self.active[target] = lease
            self.all[lease_id] = lease
            self.fresh.append(lease_id)
        return True

    def settle(self, request_id, hold, cost, queued):
        """A call held from leases ends: its hold back to them, its cost taken from them; `queued`:
        its row is waiting to be committed. The lease ids its row must name, or None."""
        leases = self.calls.pop(request_id, None)
        if leases is None:
            return None
        for lease in leases:
            lease.used -= hold
            lease.calls -= 1
            if queued:
                lease.capacity -= cost
                lease.pending += 1
        return [lease.id for lease in leases]

    def committed(self, ids, stuck=False):
        """Rows naming these leases were committed (or, `stuck`, set aside for a replay)."""
        for lease_id in ids:
            lease = self.all.get(lease_id)
            if lease is not None:
                lease.pending -= 1
                lease.stuck = lease.stuck or stuck

    def due(self, now=None):
        """Leases that admit no more and whose calls and rows are all done: to be given back."""
        now = time.monotonic() if now is None else now
        return [lease for lease in self.all.values()
                if (now >= lease.admit_until or self.active.get(lease.target) is not lease)
                and not lease.calls and not lease.pending and not lease.stuck]

    def next_due(self):
        """Seconds until the next lease stops admitting, a little after (None: none admits); one
        that stopped is given back after its last row is committed, by that commit's pass."""
        now = time.monotonic()
        ends = [lease.admit_until for lease in self.all.values() if lease.admit_until > now]
        return min(ends) - now + 0.01 if ends else None

    def give_back(self, db, leases):
        """Delete the leases' rows and give their remainders back, in one transaction."""
        give_back(db, [lease.id for lease in leases])
        for lease in leases:
            self.all.pop(lease.id, None)
            if self.active.get(lease.target) is lease:
                del self.active[lease.target]

    def forget(self):
        """After fork: the parent's leases are the parent's."""
        self.active, self.all, self.calls, self._taking, self.fresh = {}, {}, {}, None, []


def give_back(db, ids):
    """Delete these leases' rows and give their remainders back to their budgets, in one
    transaction (a lease already gone gives nothing). Also how a dead worker's leases are given
    back once its journal is replayed (gateway/spend/ledger.py)."""
    sql = _sql()
    with db.engine.begin() as connection:
        for lease_id in ids:
            held = connection.execute(sql.drop_lease, {"r": lease_id}).first()
            if held is not None:
                for target in budgets.held_targets(held.levels, {}):
                    budgets.release(connection, target, held.amount, counted=1)


def _budgets(rules, levels):
    """target -> max_budget the call sees now (a lease taken under another admits no more)."""
    from gateway.spend.statements import key_of
    limits = {}
    key = key_of(rules)
    if key is not None and rules.max_budget is not None:
        limits[key] = rules.max_budget
    for level in levels:
        if level.max_budget is not None:
            limits[(level.kind, level.id)] = level.max_budget
    return limits


def take(db, targets, amount, seconds, rules):
    """One transaction: a lease of every target, or none (raises _NoLease). [(id, target, budget,
    amount)]. Each is LEASE_SHARE of the target's headroom, at least LEASE_MIN_CALLS x `amount`;
    its row expires `seconds` from now."""
    sql = _sql()
    taken = []
    expires = budgets.now() + timedelta(seconds=seconds)
    with db.engine.begin() as connection:
        for target, period, _whose in targets:
            kind, who = target
            if period:
                budgets.reset_if_due(connection, target, period)
            found = connection.execute(sql.budget[kind], {"k": who}).first()
            if found is None or found.max_budget is None:
                raise _NoLease(target)
            chunk = (found.max_budget - found.spend - found.reserved) * LEASE_SHARE
            if not chunk >= LEASE_MIN_CALLS * amount:
                raise _NoLease(target)
            # The conditional UPDATE, not the read above, decides: another worker may have taken
            # some of the headroom since (PostgreSQL); then this lease is refused, never too big.
            if not connection.execute(sql.take[kind, False], {"k": who, "a": chunk, "n": 1}).rowcount:
                raise _NoLease(target)
            lease_id = LEASE_PREFIX + uuid.uuid4().hex
            connection.execute(sql.add_hold, {
                "request_id": lease_id, "key_id": rules.key_id if rules is not None else None,
                "key_hash": rules.hash if rules is not None else None, "amount": chunk,
                "levels": [list(target)], "expires_at": expires})
            taken.append((lease_id, target, found.max_budget, chunk))
    return taken


def take_costs(connection, entries):
    """In a commit: each lease named by the entries' rows gives up their costs (the lease row's
    amount and its budget's `reserved`, together); a lease already given back or expired gives
    nothing (its remainder went back whole)."""
    per_lease = {}
    for entry in entries:
        if entry.lease:
            cost = entry.row["cost"]
            for lease_id in entry.lease:
                per_lease[lease_id] = per_lease.get(lease_id, 0.0) + cost
    sql = _sql()
    for lease_id, cost in per_lease.items():
        if cost:
            held = connection.execute(sql.shrink_hold, {"r": lease_id, "a": cost}).first()
            if held is not None:
                for target in budgets.held_targets(held.levels, {}):
                    budgets.release(connection, target, cost, counted=0)
