"""The ledger's daily roll-up (gateway/spend/rollup.py) on SQLite and PostgreSQL: written in the
ledger's own transaction with only the rows that are new (a replayed journal adds nothing twice),
filled from existing rows by migration 0009, and read by whole-day reports with the answers the rows
themselves give."""

from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import column as sa_column
from sqlalchemy import select
from sqlalchemy import table as sa_table

from gateway.spend import reports
from gateway.spend import rollup
from gateway.spend.ledger import Ledger
from gateway.spend.ledger import _Entry
from gateway.storage import Database
from gateway.storage.models import Base
from gateway.storage.models import SpendRow
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401
from tests.unit.spend.test_reports import DAYS
from tests.unit.spend.test_reports import world  # noqa: F401
from tests.unit.storage.test_hierarchy_migration import upgrade

UTC = timezone.utc


def row(request_id, start, cost, **extra):
    return {"request_id": request_id, "key_hash": None, "key_alias": None, "user_id": None, "team_id": None,
            "call_type": "chat", "model_group": "m", "deployment_id": "d", "provider": "openai", "model": "gpt-4o",
            "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": cost, "estimated": False,
            "cache_hit": False, "stream": False, "status": "success", "start_time": start, "end_time": start,
            **extra}


def from_rows(database, name):
    """{(day, dims): sums} of roll-up `name` computed from gateway_spend itself."""
    found = {}
    with database.session() as session:
        for r in session.scalars(select(SpendRow)):
            values = tuple(getattr(r, n) for n in rollup.ROLLUPS[name])
            sums = found.setdefault((rollup.day_of(r.start_time), rollup.dims_of(values)), [0, 0, 0, 0, 0.0])
            for i, amount in enumerate((1, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost)):
                sums[i] += amount
    return found


def from_rollup(database, name):
    table = Base.metadata.tables[name]
    with database.engine.connect() as connection:
        return {(d.day, d.dims): [d.requests, d.prompt_tokens, d.completion_tokens, d.total_tokens, d.spend]
                for d in connection.execute(select(table))}


def same_everywhere(database):
    """Both roll-ups hold exactly what the rows say; their first's contents."""
    for name in rollup.ROLLUPS:
        same(from_rollup(database, name), from_rows(database, name))
    return from_rollup(database, "gateway_spend_daily")


def same(left, right):
    assert left.keys() == right.keys()
    for k in left:
        assert left[k][:4] == right[k][:4] and left[k][4] == pytest.approx(right[k][4], rel=1e-12), k


def test_the_ledger_keeps_the_roll_up_exactly_and_a_replay_adds_nothing_twice(db, tmp_path):  # noqa: F811
    ledger = Ledger(lambda: db, str(tmp_path / "spool"))
    late = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    plan = [("a", late, 0.5, {"team_id": "t1", "end_user": "e1"}),
            ("b", late + timedelta(microseconds=1), 0.25, {"team_id": "t1", "end_user": "e1"}),  # the next day
            ("c", late, 1.0, {"team_id": "t2"}),
            ("d", late - timedelta(hours=1), 2.0, {"team_id": "t1", "end_user": "e1"}),
            ("e", datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=-5))), 4.0, {})]  # 17:00 UTC
    for request_id, start, cost, extra in plan:
        ledger.write(row(request_id, start, cost, **extra))
    # A journal replayed after its rows were committed (a commit the writer saw fail): nothing twice.
    ledger._spool([_Entry(row("a", late, 0.5, team_id="t1", end_user="e1")), _Entry(row("f", late, 8.0))])
    ledger._replay(db)
    got = same_everywhere(db)
    assert sum(v[0] for v in got.values()) == 6 and sum(v[4] for v in got.values()) == pytest.approx(15.75)
    by_day = {}
    for (day, _dims), sums in got.items():
        by_day[day] = by_day.get(day, 0) + sums[0]
    assert by_day == {"2026-03-01": 5, "2026-03-02": 1}


def test_migration_0009_fills_the_roll_up_from_the_rows_already_there(new_db_url):  # noqa: F811
    database = Database(new_db_url())
    upgrade(database, "0008_ui_sessions")
    start = datetime(2026, 5, 4, 23, 30, tzinfo=UTC)
    rows = [row(f"r{i}", start + timedelta(minutes=20 * i), 0.1 * i, team_id=f"t{i % 2}", user_id="u",
                end_user=None if i % 3 else "e", key_id=i % 2 or None) for i in range(7)]
    as_then = sa_table("gateway_spend", *(sa_column(name) for name in rows[0]))  # the table at 0008
    with database.engine.begin() as connection:
        connection.execute(as_then.insert(), rows)
    database.migrate()
    assert sum(v[0] for v in same_everywhere(database).values()) == 7
    database.engine.dispose()


@pytest.mark.parametrize("report, filters", [
    (reports.report_by_team, {}), (reports.report_by_key, {}), (reports.report_by_team, {"team_id": "team-a"}),
    (reports.report_by_key, {"user_id": "user-1"}), (reports.report_by_team, {"organization_id": "org-1"})])
def test_whole_day_reports_read_the_roll_up_and_answer_as_the_rows_do(world, monkeypatch, report, filters):  # noqa: F811
    start, end = DAYS[0], DAYS[2] + timedelta(days=1, microseconds=-1)  # bare dates: whole days
    used = []
    real = reports._source

    def spy(*args):
        found = real(*args)
        used.append(type(found).__name__)
        return found
    monkeypatch.setattr(reports, "_source", spy)
    from_days = report(world.db, start, end, **filters)
    assert used == ["_Days"]
    monkeypatch.setattr(reports._Days, "answers", classmethod(lambda cls, *a: False))
    from_rows_answer = report(world.db, start, end, **filters)
    assert used == ["_Days", "_Rows"] and from_days and _approx(from_days) == _approx(from_rows_answer)
    # A key named by its hash: its rows by id too (regenerated keys keep their id).
    if report is reports.report_by_key and not filters:
        key_hash = from_days[0]["api_key"]
        monkeypatch.undo()
        one = report(world.db, start, end, key_hash=key_hash)
        assert [entry["api_key"] for entry in one] == [key_hash]


@pytest.mark.parametrize("group_by, filters", [
    ("team", {}), ("key", {}), ("model", {}), ("user", {}), ("organization", {}), ("end_user", {}),
    ("model", {"team_id": "team-a"}), ("team", {"model": "claude"}), ("key", {"user_id": "user-2"})])
def test_spend_daily_sums_the_roll_ups_as_the_rows_add_up(world, group_by, filters):  # noqa: F811
    column = reports.DAILY_GROUPS[group_by]
    rows = [r for r in world.rows if all(r[k] == v for k, v in filters.items())]
    answer = reports.daily_totals(world.db, "2024-01-01", "2024-12-31", group_by, **filters)
    per_group = {}
    for r in rows:
        g = per_group.setdefault(r[column], {"spend": 0.0, "total_tokens": 0, "requests": 0, "days": {}})
        g["spend"] += r["cost"]
        g["total_tokens"] += r["total_tokens"]
        g["requests"] += 1
        day = r["start_time"].date().isoformat()
        g["days"][day] = g["days"].get(day, 0.0) + r["cost"]
    got = {g["group"]: {k: g[k] for k in ("spend", "total_tokens", "requests", "days")} for g in answer["groups"]}
    assert _approx(got) == _approx(per_group) and answer["others"] is None
    assert [g["spend"] for g in answer["groups"]] == sorted((g["spend"] for g in answer["groups"]), reverse=True)
    assert answer["spend"] == pytest.approx(sum(r["cost"] for r in rows)) and answer["requests"] == len(rows)
    if group_by == "team" and "team-a" in got:
        assert {g["group"]: g.get("name") for g in answer["groups"]}["team-a"] == "Alpha Team"
    # The largest `limit` groups, and the rest in `others`, adding up to the whole.
    if len(answer["groups"]) > 1:
        cut = reports.daily_totals(world.db, "2024-01-01", "2024-12-31", group_by, limit=1, **filters)
        assert cut["groups"][0]["group"] == answer["groups"][0]["group"] and len(cut["groups"]) == 1
        assert cut["others"]["requests"] == len(rows) - answer["groups"][0]["requests"]
        assert cut["others"]["spend"] == pytest.approx(answer["spend"] - answer["groups"][0]["spend"])


def _approx(value):
    """The answer with floats rounded past their last reliable digit (sums in another order)."""
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    return value


def test_a_range_inside_a_day_or_an_unrolled_filter_reads_the_rows():
    midnight = datetime(2026, 1, 2, tzinfo=UTC)
    last = midnight + timedelta(days=1, microseconds=-1)
    assert rollup.whole_days(midnight, last) and rollup.whole_days(None, last) and rollup.whole_days(midnight, None)
    assert not rollup.whole_days(midnight + timedelta(hours=1), last)
    assert not rollup.whole_days(midnight, midnight + timedelta(hours=23, minutes=59, seconds=59))
    assert not rollup.whole_days(datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=2))), None)
    assert reports._Days.answers(midnight, last, {"team_id": "t", "key_hash": None})
    assert not reports._Days.answers(midnight, last, {"model": "m"})


def test_dims_keep_none_and_empty_text_apart():
    assert rollup.dims_of((None, "a")) != rollup.dims_of(("", "a")) != rollup.dims_of(("a", None))
    assert len(rollup.dims_of(("x",) * 7)) == 64


def test_logs_by_key_and_model_walk_both_columns_and_merge_newest_first(db, service):  # noqa: F811
    """A key is its id (rows from before /key/regenerate) or the hash it was called with; a model is
    its group or the provider model: every combination is read and merged in time order."""
    from gateway.access.keys import hash_key
    from gateway.storage.models import VirtualKey
    key = service.generate({"key_alias": "k"})["key"]
    digest = hash_key(key)
    with db.session() as session:
        key_id = session.scalar(select(VirtualKey.id).where(VirtualKey.key_hash == digest))
    base = datetime(2026, 2, 1, tzinfo=UTC)
    plan = [("by-id-group", {"key_id": key_id, "key_hash": "f" * 64, "model_group": "grp", "model": "x"}),
            ("by-hash-model", {"key_id": None, "key_hash": digest, "model_group": "other", "model": "grp"}),
            ("by-id-model", {"key_id": key_id, "key_hash": "e" * 64, "model_group": None, "model": "grp"}),
            ("other-key", {"key_id": None, "key_hash": "d" * 64, "model_group": "grp", "model": "grp"}),
            ("other-model", {"key_id": key_id, "key_hash": digest, "model_group": "m2", "model": "m2"}),
            ("by-hash-group", {"key_id": None, "key_hash": digest, "model_group": "grp", "model": "grp"})]
    rows = [row(name, base + timedelta(minutes=i), 1.0, **extra) for i, (name, extra) in enumerate(plan)]
    with db.engine.begin() as connection:
        connection.execute(SpendRow.__table__.insert(), rows)
    found = [r["request_id"] for r in reports.logs(db, key_hash=digest, model="grp")]
    assert found == ["by-hash-group", "by-id-model", "by-hash-model", "by-id-group"]
    assert [r["request_id"] for r in reports.logs(db, limit=2, key_hash=digest, model="grp")] == found[:2]
    later = (base + timedelta(minutes=2), "by-id-model")
    assert [r["request_id"] for r in reports.logs(db, key_hash=digest, model="grp", before=later)] == found[2:]
