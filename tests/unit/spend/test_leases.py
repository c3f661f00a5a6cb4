"""Budget leases (issue #17, part 2; gateway/spend/leases.py), on SQLite and the real PostgreSQL:
a worker takes a slice of a budget's headroom in one transaction and holds its calls from it in
memory; rows take their costs from the lease as they commit; a drained lease is given back; a
budget near its end is held call by call; a dead worker's lease expires and is swept; a journal
replay takes its rows' costs from the lease. Spend + reserved in the database never counts less
than what may still be spent, so nothing overshoots."""

import dataclasses
import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy import update

from gateway.access.hierarchy import Hierarchy
from gateway.spend import leases as lease_module
from gateway.spend.ledger import Ledger
from gateway.storage.models import BudgetHold
from gateway.storage.models import Team
from gateway.storage.models import VirtualKey
from tests.unit.access.test_keys import count_statements
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401
from tests.unit.spend.test_ledger import _journal
from tests.unit.spend.test_ledger import _key
from tests.unit.spend.test_ledger import _row

SHARE, MIN_CALLS = lease_module.LEASE_SHARE, lease_module.LEASE_MIN_CALLS


def _ledger(db, tmp_path, seconds=30.0, soft=False):  # noqa: F811
    return Ledger(lambda: db, str(tmp_path / "spool"), asynchronous=True, lease_seconds=seconds,
                  budget_mode="soft" if soft else "strict")


def _key_row(db, key_id):  # noqa: F811
    with db.session() as session:
        return session.execute(select(VirtualKey).where(VirtualKey.id == key_id)).scalar_one()


def _holds(db):  # noqa: F811
    with db.session() as session:
        return {h.request_id: h.amount for h in session.scalars(select(BudgetHold))}


def _writes(statements):
    return [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]


def _expire_admission(ledger):
    for lease in ledger.leases.all.values():
        lease.admit_until = time.monotonic() - 1


def test_a_lease_holds_many_calls_with_one_write_and_rows_take_their_costs(db, service, tmp_path):  # noqa: F811
    rules = _key(service, max_budget=1000.0)
    ledger = _ledger(db, tmp_path)
    statements = count_statements(db)
    for i in range(20):
        assert ledger.hold(rules, f"r{i}", 1.0, 60) == (True, None)
    assert len(_writes(statements)) == 2  # the key's reserved up, the lease's row: once for 20 calls
    (lease_id, amount), = _holds(db).items()
    assert lease_id.startswith("lease:") and amount == pytest.approx(1000.0 * SHARE)
    key = _key_row(db, rules.key_id)
    assert (key.reserved, key.holds) == (pytest.approx(1000.0 * SHARE), 1)

    for i in range(20):
        ledger.write(_row(rules, f"r{i}", 0.25), 1.0, rules)
    ledger.flush()
    key = _key_row(db, rules.key_id)
    assert key.spend == pytest.approx(5.0)
    assert key.reserved == pytest.approx(1000.0 * SHARE - 5.0)  # the lease, less what its rows cost
    assert _holds(db) == {lease_id: pytest.approx(1000.0 * SHARE - 5.0)}
    assert key.spend + key.reserved == pytest.approx(1000.0 * SHARE)  # never less than may be spent


def test_a_drained_lease_is_given_back_once_its_rows_are_committed(db, service, tmp_path):  # noqa: F811
    rules = _key(service, max_budget=1000.0)
    ledger = _ledger(db, tmp_path)
    assert ledger.hold(rules, "a", 1.0, 60)[0] and ledger.hold(rules, "b", 1.0, 60)[0]
    _expire_admission(ledger)
    ledger.write(_row(rules, "a", 0.5), 1.0, rules)
    ledger.flush()
    assert len(_holds(db)) == 1  # call b is still in flight: the lease stays
    ledger.write(_row(rules, "b", 0.75), 1.0, rules)
    ledger.flush()  # b's row commits, then the lease goes back
    key = _key_row(db, rules.key_id)
    assert _holds(db) == {}
    assert (key.spend, key.reserved, key.holds) == (pytest.approx(1.25), pytest.approx(0.0, abs=1e-9), 0)
    assert ledger.leases.all == {} and ledger.leases.calls == {}


def test_the_next_lease_is_taken_when_one_stops_admitting(db, service, tmp_path):  # noqa: F811
    rules = _key(service, max_budget=1000.0)
    ledger = _ledger(db, tmp_path)
    assert ledger.hold(rules, "a", 1.0, 60)[0]
    first = set(_holds(db))
    _expire_admission(ledger)
    assert ledger.hold(rules, "b", 1.0, 60)[0]
    assert len(_holds(db)) == 2 and first < set(_holds(db))
    # the second lease is a share of what the first left: spend + reserved stays within the budget
    key = _key_row(db, rules.key_id)
    assert key.reserved == pytest.approx(1000.0 * SHARE + (1000.0 - 1000.0 * SHARE) * SHARE)


def test_a_budget_near_its_end_is_held_call_by_call(db, service, tmp_path):  # noqa: F811
    """Under MIN_CALLS / SHARE worst cases of headroom no lease is taken: the calls hold in the
    database, and admit exactly what fits (strict)."""
    budget = MIN_CALLS / SHARE - 1  # one worst case short of a lease
    rules = _key(service, max_budget=budget)
    ledger = _ledger(db, tmp_path)
    admitted = 0
    for i in range(int(budget) + 5):
        ok, balance = ledger.hold(rules, f"r{i}", 1.0, 60)
        admitted += ok
    assert admitted == int(budget)
    assert not any(request_id.startswith("lease:") for request_id in _holds(db))
    assert ledger.leases.all == {}


def test_leases_never_let_a_budget_overshoot(db, service, tmp_path):  # noqa: F811
    """Two workers (two ledgers) hold and settle calls whose cost is their worst case until both
    are refused: the spend never passes the budget, and once every lease is given back the budget
    left is under one call (nothing stays stranded in a lease)."""
    budget = 1000.0
    rules = _key(service, max_budget=budget)
    workers = [_ledger(db, tmp_path / f"w{n}") for n in range(2)]
    admitted, refused_in_a_row, n = 0, 0, 0
    while refused_in_a_row < 4:
        ledger = workers[n % 2]
        n += 1
        ok, _ = ledger.hold(rules, f"r{n}", 3.0, 60)
        if ok:
            admitted += 1
            refused_in_a_row = 0
            ledger.write(_row(rules, f"r{n}", 3.0), 3.0, rules)
            if n % 7 == 0:
                ledger.flush()
        else:
            refused_in_a_row += 1
            for each in workers:  # what a refused caller waits for: the leases drain and go back
                _expire_admission(each)
                each.flush()
        key = _key_row(db, rules.key_id)
        assert key.spend <= budget + 1e-9
    key = _key_row(db, rules.key_id)
    assert key.spend == pytest.approx(admitted * 3.0)
    assert budget - key.spend < 3.0
    assert (key.reserved, key.holds) == (pytest.approx(0.0, abs=1e-9), 0)


def test_a_changed_max_budget_stops_the_lease_at_once(db, service, tmp_path):  # noqa: F811
    rules = _key(service, max_budget=1000.0)
    ledger = _ledger(db, tmp_path)
    assert ledger.hold(rules, "a", 1.0, 60)[0]
    with db.session() as session:
        session.execute(update(VirtualKey).where(VirtualKey.id == rules.key_id).values(max_budget=100.0))
    lowered = dataclasses.replace(rules, max_budget=100.0)
    # the old lease (62.5) would still admit; the new budget's headroom (100 - 62.5) is too small
    # for a lease of its own, so the call holds in the database and is refused there
    ok, balance = ledger.hold(lowered, "b", 40.0, 60)
    assert not ok and balance.budget == pytest.approx(100.0)
    ledger.write(_row(rules, "a", 1.0), 1.0, rules)
    ledger.flush()
    assert _holds(db) == {}  # the old lease, drained, went back
    assert _key_row(db, rules.key_id).reserved == pytest.approx(0.0, abs=1e-9)


def test_a_team_budget_gets_a_lease_of_its_own(db, service, tmp_path):  # noqa: F811
    hierarchy = Hierarchy(service)
    hierarchy.new_team({"team_id": "team-1", "max_budget": 500.0})
    rules = service.lookup(service.generate({"team_id": "team-1", "max_budget": 1000.0})["key"])
    ledger = _ledger(db, tmp_path)
    assert ledger.hold(rules, "a", 1.0, 60, rules.levels)[0]
    assert sorted(_holds(db).values()) == [pytest.approx(500.0 * SHARE), pytest.approx(1000.0 * SHARE)]
    ledger.write(_row(rules, "a", 2.0, team_id="team-1"), 1.0, rules, rules.levels)
    ledger.flush()
    with db.session() as session:
        team = session.execute(select(Team).where(Team.team_id == "team-1")).scalar_one()
    assert (team.spend, team.reserved) == (pytest.approx(2.0), pytest.approx(500.0 * SHARE - 2.0))
    assert _key_row(db, rules.key_id).reserved == pytest.approx(1000.0 * SHARE - 2.0)


def test_a_dead_workers_lease_expires_and_is_swept(db, service, tmp_path):  # noqa: F811
    rules = _key(service, max_budget=1000.0)
    dead = _ledger(db, tmp_path / "dead")
    assert dead.hold(rules, "a", 1.0, 60)[0]
    (lease_id, _), = _holds(db).items()
    with db.session() as session:  # its row expires (budget_hold_seconds after it stopped admitting)
        session.execute(update(BudgetHold).where(BudgetHold.request_id == lease_id)
                        .values(expires_at=BudgetHold.expires_at - timedelta(days=1)))
    assert _ledger(db, tmp_path / "live").sweep(db) == 1
    key = _key_row(db, rules.key_id)
    assert (key.reserved, key.holds) == (pytest.approx(0.0, abs=1e-9), 0)  # counted once, whatever is left


def test_a_replayed_journal_takes_its_rows_costs_from_the_lease(db, service, tmp_path):  # noqa: F811
    """A worker died with rows in its journal: whoever replays it takes their costs from the lease
    while its row is there, and only spend once it was swept."""
    rules = _key(service, max_budget=1000.0)
    dead = _ledger(db, tmp_path)
    assert dead.hold(rules, "a", 1.0, 60)[0]
    (lease_id, chunk), = _holds(db).items()
    spool = str(tmp_path / "spool")
    _journal(spool, "spend-4194003.jsonl", [{"row": _row(rules, "a", 0.5), "hold": 0.0, "reset": None,
                                             "lease": [lease_id]}])
    live = _ledger(db, tmp_path)
    live._replay(db)
    key = _key_row(db, rules.key_id)
    assert (key.spend, key.reserved) == (pytest.approx(0.5), pytest.approx(chunk - 0.5))
    assert _holds(db) == {lease_id: pytest.approx(chunk - 0.5)}


def test_a_dead_workers_journal_gives_its_leases_back_once_its_rows_are_in(db, service, tmp_path):  # noqa: F811
    """The journal names each lease when it is taken and every journal after it: a worker that
    replays the journal of one that died commits its rows (their costs from the lease), then gives
    what is left of its leases back, without waiting for them to expire."""
    rules = _key(service, max_budget=1000.0)
    dead = _ledger(db, tmp_path)
    assert dead.hold(rules, "a", 1.0, 60)[0] and dead.hold(rules, "b", 1.0, 60)[0]
    dead.write(_row(rules, "a", 0.5), 1.0, rules)  # "b" is in flight when its worker dies
    (journal,) = (tmp_path / "spool").glob(f"spend-{os.getpid()}-*.live.jsonl")
    lines = journal.read_bytes()
    assert b'"lease":"lease:' in lines
    dead.forget_parent()  # as if the process were gone: its journal is unlocked, its rows uncommitted
    os.rename(journal, tmp_path / "spool" / "spend-4194004.jsonl")
    _ledger(db, tmp_path)._replay(db)
    key = _key_row(db, rules.key_id)
    assert (key.spend, key.reserved, key.holds) == (pytest.approx(0.5), pytest.approx(0.0, abs=1e-9), 0)
    assert _holds(db) == {}


def test_a_lease_used_up_while_a_call_waited_for_another_is_not_overdrawn(db, service, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    """A call that needs a new lease for one budget waits for the database (other greenlets of the
    worker run meanwhile); the lease it had found for its other budget may be used up by then. It
    chooses again after the wait: no lease ever holds more than it covers."""
    hierarchy = Hierarchy(service)
    hierarchy.new_team({"team_id": "team-1", "max_budget": 1000.0})
    rules = service.lookup(service.generate({"team_id": "team-1", "max_budget": 1000.0})["key"])
    ledger = _ledger(db, tmp_path)
    assert ledger.hold(rules, "a", 1.0, 60, rules.levels)[0]
    key_target = ("id", rules.key_id)
    key_lease = ledger.leases.active[key_target]
    team_lease = ledger.leases.active[("team", "team-1")]
    team_lease.admit_until = time.monotonic() - 1  # the team's lease stops admitting: a new one is needed
    real_take = lease_module.take

    def take_while_others_run(*args, **kwargs):
        key_lease.used = key_lease.capacity  # meanwhile, other calls used the key's lease up
        return real_take(*args, **kwargs)
    monkeypatch.setattr(lease_module, "take", take_while_others_run)
    assert ledger.hold(rules, "b", 1.0, 60, rules.levels)[0]
    assert key_lease.used == key_lease.capacity  # not overdrawn: "b" holds from a new key lease
    assert ledger.leases.active[key_target] is not key_lease
    assert ledger.leases.calls["b"] == [ledger.leases.active[key_target], ledger.leases.active[("team", "team-1")]]
