"""Budgets at every level (issue #13): a call's worst case is held against its key, its user, its
team, its organization and its end user at once, in one transaction (all or none); the row settles
every hold and rolls its cost up to each level; expired holds release every level; a level's budget
period starts over once, and cost landing after it lands in the new period. SQLite and PostgreSQL."""

from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import select
from sqlalchemy import update

from gateway import errors
from gateway.access.hierarchy import Hierarchy
from gateway.access.keys import Level
from gateway.spend.ledger import Ledger
from gateway.spend.meter import SpendTracker
from gateway.storage.models import BudgetHold
from gateway.storage.models import EndUser
from gateway.storage.models import Organization
from gateway.storage.models import Team
from gateway.storage.models import User
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401
from tests.unit.spend.test_ledger import _row

WORST, REAL = 1.0, 0.25


@pytest.fixture
def world(db, service):  # noqa: F811
    """An organization, a team in it, a user in the team, an end user; a key of the user in the team."""
    hierarchy = Hierarchy(service)
    hierarchy.new_organization({"organization_id": "org-1", "organization_alias": "Org"})
    hierarchy.new_team({"team_id": "team-1", "organization_id": "org-1"})
    hierarchy.new_user({"user_id": "user-1", "auto_create_key": False})
    hierarchy.new_customer({"user_id": "end-1"})
    key = service.generate({"team_id": "team-1", "user_id": "user-1"})["key"]
    return hierarchy, key


def _id_column(model):
    return {Organization: Organization.organization_id, Team: Team.team_id, User: User.user_id,
            EndUser: EndUser.user_id}[model]


def _set(db, model, ident, **values):
    column = _id_column(model)
    with db.session() as session:
        session.execute(update(model).where(column == ident).values(**values))


def _level_row(db, model, ident):
    column = _id_column(model)
    with db.session() as session:
        row = session.execute(select(model).where(column == ident)).scalar_one()
        return row.spend, row.reserved, row.holds


def _tracker(db, tmp_path, soft=False):
    ledger = Ledger(lambda: db, str(tmp_path / "spool"), asynchronous=False,
                    budget_mode="soft" if soft else "strict")
    return SpendTracker(ledger, None, 60)


def _rules(service, key, end_user=None, end_budget=None):  # noqa: F811
    rules = service.lookup(key)
    levels = rules.levels
    if end_user is not None:
        levels = levels + (Level("end_user", end_user, max_budget=end_budget),)
    return rules, levels


def test_a_teams_budget_holds_the_calls_of_every_key_in_it(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    other = service.generate({"team_id": "team-1"})["key"]
    _set(db, Team, "team-1", max_budget=2.5 * WORST)
    service.changed_all()
    tracker = _tracker(db, tmp_path)
    for n, each in enumerate((key, other)):
        rules, levels = _rules(service, each)
        tracker.reserve(rules, f"req-{n}", WORST, levels)
    rules, levels = _rules(service, key)
    with pytest.raises(errors.BudgetExceededError, match=r"Team `team-1` budget: \$2\.5"):
        tracker.reserve(rules, "req-3", WORST, levels)
    assert _level_row(db, Team, "team-1")[1:] == (2 * WORST, 2)


def test_a_refusal_at_one_level_holds_nothing_at_the_others(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    _set(db, User, "user-1", max_budget=10.0)
    _set(db, Organization, "org-1", max_budget=0.5 * WORST)
    service.changed_all()
    rules, levels = _rules(service, key)
    assert [level.kind for level in levels] == ["user", "organization"]  # only levels that budget or limit
    with pytest.raises(errors.BudgetExceededError, match="Organization `org-1`"):
        _tracker(db, tmp_path).reserve(rules, "req-1", WORST, levels)
    assert _level_row(db, User, "user-1") == (0.0, 0.0, 0)  # the user's hold was rolled back
    with db.session() as session:
        assert session.scalars(select(BudgetHold)).all() == []


def test_the_row_settles_every_hold_and_rolls_its_cost_up_to_every_level(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    _set(db, Team, "team-1", max_budget=10.0)
    _set(db, EndUser, "end-1", max_budget=10.0)
    service.changed_all()
    rules, levels = _rules(service, key, end_user="end-1", end_budget=10.0)
    tracker = _tracker(db, tmp_path)
    tracker.reserve(rules, "req-1", WORST, levels)
    assert _level_row(db, EndUser, "end-1")[1:] == (WORST, 1)
    row = _row(rules, "req-1", REAL, user_id="user-1", team_id="team-1", organization_id="org-1", end_user="end-1")
    tracker.ledger.write(row, WORST, rules, levels)
    for model, ident in ((Team, "team-1"), (EndUser, "end-1"), (User, "user-1"), (Organization, "org-1")):
        assert _level_row(db, model, ident) == (REAL, 0.0, 0), model.__name__
    assert service.info(key)["spend"] == REAL


def test_an_expired_hold_releases_every_level_it_held(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    _set(db, Team, "team-1", max_budget=10.0)
    _set(db, Organization, "org-1", max_budget=10.0)
    service.changed_all()
    rules, levels = _rules(service, key)
    ledger = _tracker(db, tmp_path).ledger
    assert ledger.hold(rules, "req-dead", WORST, 60, levels) == (True, None)
    with db.session() as session:
        session.execute(update(BudgetHold).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert ledger.sweep(db) == 1
    assert _level_row(db, Team, "team-1")[1:] == (0.0, 0)
    assert _level_row(db, Organization, "org-1")[1:] == (0.0, 0)


def test_the_master_key_is_held_to_an_end_users_budget(db, service, world, tmp_path):  # noqa: F811
    _set(db, EndUser, "end-1", max_budget=1.5 * WORST)
    tracker = _tracker(db, tmp_path)
    end = (Level("end_user", "end-1", max_budget=1.5 * WORST),)
    tracker.reserve(None, "req-1", WORST, end)
    with pytest.raises(errors.BudgetExceededError, match="End user `end-1`"):
        tracker.reserve(None, "req-2", WORST, end)
    tracker.ledger.write(_row(None, "req-1", REAL, end_user="end-1"), WORST, None, end)
    assert _level_row(db, EndUser, "end-1") == (REAL, 0.0, 0)


def test_soft_budgets_let_one_call_past_at_a_level_with_nothing_in_flight(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    _set(db, Team, "team-1", max_budget=0.5 * WORST)
    service.changed_all()
    rules, levels = _rules(service, key)
    tracker = _tracker(db, tmp_path, soft=True)
    tracker.reserve(rules, "req-1", WORST, levels)  # alone: admitted though it may overshoot
    with pytest.raises(errors.BudgetExceededError):
        tracker.reserve(rules, "req-2", WORST, levels)


def test_a_levels_period_starts_over_once_and_late_cost_lands_in_the_new_one(db, service, world, tmp_path):  # noqa: F811
    _, key = world
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    _set(db, Team, "team-1", max_budget=10.0, budget_duration="30d", budget_reset_at=past, spend=7.0)
    service.changed_all()
    rules, levels = _rules(service, key)
    tracker = _tracker(db, tmp_path)
    # A row commits after the period ended and before any hold started the new one: it starts it.
    row = _row(rules, "req-late", REAL, user_id="user-1", team_id="team-1", organization_id="org-1")
    tracker.ledger.write(row, 0.0, rules, levels)
    spend, _, _ = _level_row(db, Team, "team-1")
    assert spend == REAL  # the old period's 7.0 is gone, the late cost is not
    tracker.reserve(rules, "req-next", WORST, levels)  # the period is not over again: no second reset
    assert _level_row(db, Team, "team-1")[0] == REAL
