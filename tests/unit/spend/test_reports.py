"""Spend reports (gateway/spend/reports.py) on SQLite and on the real PostgreSQL: ledger rows are
inserted directly, across UTC days, teams, end users and keys, and every roll-up is checked against
sums computed here from the same rows. Costs are sums of powers of two, so the sums are exact
whatever order the database adds them in."""

import json
from collections import defaultdict
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import event
from sqlalchemy import select

from gateway.access.hierarchy import Hierarchy
from gateway.access.keys import hash_key
from gateway.spend import reports
from gateway.spend import rollup
from gateway.storage.models import SpendRow
from gateway.storage.models import VirtualKey
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401

UTC = timezone.utc
DAY1 = datetime(2024, 5, 10, tzinfo=UTC)
DAYS = [DAY1, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)]
EVERYTHING = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))


class World:
    """Two teams (one with an alias), two users, two end users, three keys, and the ledger rows."""

    def __init__(self, db, service):
        self.db = db
        hierarchy = Hierarchy(service)
        hierarchy.new_organization({"organization_id": "org-1"})
        hierarchy.new_team({"team_id": "team-a", "team_alias": "Alpha Team", "organization_id": "org-1"})
        hierarchy.new_team({"team_id": "team-b"})
        for user in ("user-1", "user-2"):
            hierarchy.new_user({"user_id": user, "auto_create_key": False})
        self.keys = {"a1": service.generate({"team_id": "team-a", "user_id": "user-1", "key_alias": "a-one"})["key"],
                     "b2": service.generate({"team_id": "team-b", "user_id": "user-2"})["key"],
                     "solo": service.generate({"key_alias": "solo"})["key"]}
        with db.session() as session:
            self.ids = {name: session.scalar(select(VirtualKey.id).where(VirtualKey.key_hash == hash_key(key)))
                        for name, key in self.keys.items()}
        self.rows = []
        # (day, hour, minute, key, end user, model, cost, prompt tokens, completion tokens)
        plan = [
            (0, 0, 0, "a1", "eu-1", "gpt-4o", 0.5, 10, 20),
            (0, 23, 59, "a1", "eu-1", "gpt-4o", 0.25, 5, 7),
            (0, 12, 0, "a1", "eu-2", "gpt-4o-mini", 0.125, 3, 4),
            (0, 13, 0, "b2", "eu-2", "gpt-4o", 1.0, 100, 1),
            (0, 14, 0, "solo", None, "gpt-4o", 2.0, 1, 1),
            (1, 0, 0, "b2", "eu-1", "gpt-4o-mini", 0.0625, 8, 9),
            (1, 6, 0, "a1", "eu-2", "gpt-4o", 4.0, 11, 12),
            (1, 7, 0, "b2", "eu-2", "gpt-4o", 0.03125, 2, 2),
            (1, 8, 0, "master", "eu-1", "claude", 8.0, 30, 40),
            (2, 23, 0, "solo", "eu-2", "claude", 0.5, 6, 6),
            (2, 1, 0, "a1", None, "gpt-4o-mini", 16.0, 50, 60),
        ]
        owner = {"a1": ("user-1", "team-a", "org-1"), "b2": ("user-2", "team-b", None), "solo": (None, None, None),
                 "master": (None, None, None)}
        for n, (day, hour, minute, key, end_user, model, cost, prompt, completion) in enumerate(plan):
            user_id, team_id, org_id = owner[key]
            start = DAYS[day] + timedelta(hours=hour, minutes=minute, seconds=59 if minute == 59 else 0)
            self.rows.append({
                "request_id": f"req-{n}", "key_id": self.ids.get(key),
                "key_hash": hash_key(self.keys[key]) if key in self.keys else None,
                "key_alias": {"a1": "a-one", "solo": "solo"}.get(key), "user_id": user_id, "team_id": team_id,
                "organization_id": org_id, "end_user": end_user, "call_type": "chat", "model_group": model,
                "model": model, "provider": "openai", "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "cost": cost, "status": "success", "start_time": start,
                "end_time": start + timedelta(seconds=1)})
        with db.session() as session:  # as the ledger writes them: the rows and their daily roll-up
            session.add_all(SpendRow(**row) for row in self.rows)
            session.flush()
            rollup.add(session.connection(), self.rows)

    def day(self, row):
        return row["start_time"].date().isoformat()

    def where(self, start=None, end=None, **equal):
        return [row for row in self.rows
                if (start is None or row["start_time"] >= start) and (end is None or row["start_time"] <= end)
                and all(row[name] == value for name, value in equal.items())]


@pytest.fixture
def world(db, service):  # noqa: F811
    return World(db, service)


def expected_daily(rows, group):
    """{day: {group value: {(model, key hash): [spend, tokens]}}} from the rows themselves."""
    out = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0])))
    for row in rows:
        cell = out[row["start_time"].date().isoformat()][group(row)][(row["model"], row["key_hash"])]
        cell[0] += row["cost"]
        cell[1] += row["total_tokens"]
    return out


def answered_daily(answer, collection, group):
    out = {}
    for day in answer:
        assert day["group_by_day"].endswith("T00:00:00+00:00")
        groups = out.setdefault(day["group_by_day"][:10], {})
        for entry in day[collection]:
            cells = {(m["model"], m["api_key"]): [m["spend"], m["total_tokens"]] for m in entry["metadata"]}
            assert len(cells) == len(entry["metadata"])  # one entry per (model, key)
            assert entry["total_spend"] == sum(m["spend"] for m in entry["metadata"])
            groups[group(entry)] = cells
    return out


def plain(nested):
    return {day: {group: dict(cells) for group, cells in groups.items()} for day, groups in nested.items()}


def assert_no_key(world, answer):
    text = json.dumps(answer)
    for key in world.keys.values():
        assert key not in text


# ---- /global/spend/report ------------------------------------------------------------------------

def test_report_by_team_is_each_days_team_spend_by_model_and_key(world):
    answer = reports.report_by_team(world.db, *EVERYTHING)
    names = {"team-a": "Alpha Team", "team-b": "team-b", None: "Unassigned Team"}
    got = answered_daily(answer, "teams", lambda entry: (entry["team_id"], entry["team_name"]))
    want = expected_daily(world.rows, lambda row: (row["team_id"], names[row["team_id"]]))
    assert got == plain(want)
    assert [day["group_by_day"] for day in answer] == [d.isoformat() for d in DAYS]  # UTC midnights, in order
    for day in answer:  # teams by spend, largest first
        spends = [team["total_spend"] for team in day["teams"]]
        assert spends == sorted(spends, reverse=True)
    assert_no_key(world, answer)


def test_report_by_customer_is_each_days_end_user_spend(world):
    answer = reports.report_by_customer(world.db, *EVERYTHING)
    got = answered_daily(answer, "customers", lambda entry: entry["customer"])
    assert got == plain(expected_daily(world.rows, lambda row: row["end_user"]))
    assert None in got["2024-05-10"]  # calls without a `user` are a group of their own


def test_report_by_key_totals_each_key_with_a_model_breakdown(world):
    answer = reports.report_by_key(world.db, *EVERYTHING)
    want = defaultdict(lambda: defaultdict(lambda: [0.0, 0, 0]))
    for row in world.rows:
        cell = want[row["key_hash"]][row["model"]]
        cell[0] += row["cost"]
        cell[1] += row["prompt_tokens"]
        cell[2] += row["completion_tokens"]
    got = {entry["api_key"]: {m["model"]: [m["total_cost"], m["total_input_tokens"], m["total_output_tokens"]]
                              for m in entry["model_details"]} for entry in answer}
    assert got == {key: dict(models) for key, models in want.items()}
    for entry in answer:
        details = entry["model_details"]
        assert entry["total_cost"] == sum(m["total_cost"] for m in details)
        assert entry["total_input_tokens"] == sum(m["total_input_tokens"] for m in details)
        assert entry["total_output_tokens"] == sum(m["total_output_tokens"] for m in details)
    totals = [entry["total_cost"] for entry in answer]
    assert totals == sorted(totals, reverse=True)
    assert_no_key(world, answer)


def test_report_filters_narrow_it(world):
    a1 = world.keys["a1"]
    by_key = reports.report_by_key(world.db, *EVERYTHING, key_hash=hash_key(a1))
    assert [entry["api_key"] for entry in by_key] == [hash_key(a1)]
    assert by_key[0]["total_cost"] == sum(row["cost"] for row in world.where(key_hash=hash_key(a1)))
    by_user = reports.report_by_key(world.db, *EVERYTHING, user_id="user-2")
    assert {entry["api_key"] for entry in by_user} == {hash_key(world.keys["b2"])}
    both = reports.report_by_team_and_customer(world.db, *EVERYTHING, team_id="team-a", end_user="eu-2")
    got = answered_daily(both, "teams_customers", lambda e: (e["team_id"], e["team_name"], e["customer"]))
    want = expected_daily(world.where(team_id="team-a", end_user="eu-2"),
                          lambda row: ("team-a", "Alpha Team", "eu-2"))
    assert got == plain(want) and got
    one_team = reports.report_by_customer(world.db, *EVERYTHING, team_id="team-b")
    assert answered_daily(one_team, "customers", lambda e: e["customer"]) == plain(
        expected_daily(world.where(team_id="team-b"), lambda row: row["end_user"]))


def test_report_dates_cover_whole_utc_days(world):
    start = DAYS[1]
    end = DAYS[1] + timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)  # a bare end date
    answer = reports.report_by_team(world.db, start, end)
    assert [day["group_by_day"] for day in answer] == [DAYS[1].isoformat()]
    assert sum(team["total_spend"] for team in answer[0]["teams"]) == sum(
        row["cost"] for row in world.where(start=start, end=end))
    # 23:59:59 on the first day is the first day's, 00:00 on the second the second's
    first = reports.report_by_customer(world.db, DAYS[0], DAYS[0] + timedelta(hours=23, minutes=59, seconds=59))
    assert sum(m["spend"] for c in first[0]["customers"] for m in c["metadata"]) == sum(
        row["cost"] for row in world.rows if row["start_time"].date() == DAYS[0].date())
    assert reports.report_by_team(world.db, datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC)) == []


def test_day_buckets_are_utc_whatever_the_sessions_time_zone(world, make_db):  # noqa: F811
    """PostgreSQL sessions in UTC+14 and UTC-11: a call at 23:00 UTC is still that UTC day's."""
    if world.db.is_sqlite:
        pytest.skip("SQLite has no session time zone (times are stored in UTC)")
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        db = make_db(migrate=False)
        event.listen(db.engine, "connect", lambda conn, _record, zone=zone: _set_zone(conn, zone))
        answer = reports.report_by_team(db, *EVERYTHING)
        assert answered_daily(answer, "teams", lambda entry: entry["team_id"]) == plain(
            expected_daily(world.rows, lambda row: row["team_id"]))
        daily = reports.teams_daily(db, EVERYTHING[0])["daily_spend"]
        assert [day["date"] for day in daily] == [d.date().isoformat() for d in DAYS]


def _set_zone(connection, zone):
    cursor = connection.cursor()
    cursor.execute("SET TIME ZONE %s", (zone,))
    cursor.close()


# ---- /global/spend/keys, /models, /teams, /end_users ---------------------------------------------

def test_top_keys_are_ordered_by_spend_and_named_without_the_key(world):
    answer = reports.top_keys(world.db, EVERYTHING[0])
    spend = defaultdict(float)
    for row in world.rows:
        spend[row["key_hash"]] += row["cost"]
    assert {entry["api_key"]: entry["total_spend"] for entry in answer} == dict(spend)
    assert [entry["total_spend"] for entry in answer] == sorted(spend.values(), reverse=True)
    by_hash = {entry["api_key"]: entry for entry in answer}
    a1 = by_hash[hash_key(world.keys["a1"])]
    assert (a1["team_id"], a1["key_alias"], a1["key_name"]) == ("team-a", "a-one", "sk-..." + world.keys["a1"][-4:])
    b2 = by_hash[hash_key(world.keys["b2"])]
    assert (b2["team_id"], b2["key_alias"]) == ("team-b", "")
    assert by_hash[None]["key_name"] is None and by_hash[None]["team_id"] == ""  # the master key's calls
    assert [entry["api_key"] for entry in reports.top_keys(world.db, EVERYTHING[0], limit=2)] == \
        [entry["api_key"] for entry in answer[:2]]
    late = {entry["api_key"]: entry["total_spend"] for entry in reports.top_keys(world.db, DAYS[2])}
    assert late == {hash_key(world.keys["solo"]): 0.5, hash_key(world.keys["a1"]): 16.0}
    assert_no_key(world, answer)


def test_top_models(world):
    spend = defaultdict(float)
    for row in world.rows:
        spend[row["model"]] += row["cost"]
    answer = reports.top_models(world.db, EVERYTHING[0], limit=10)
    assert answer == [{"model": model, "total_spend": total}
                      for model, total in sorted(spend.items(), key=lambda item: -item[1])]
    assert reports.top_models(world.db, EVERYTHING[0], limit=1) == answer[:1]


def test_teams_daily(world):
    answer = reports.teams_daily(world.db, EVERYTHING[0])
    names = {"team-a": "Alpha Team", "team-b": "team-b", None: "Unassigned"}
    daily, totals = defaultdict(lambda: defaultdict(float)), defaultdict(float)
    for row in world.rows:
        daily[row["start_time"].date().isoformat()][names[row["team_id"]]] += row["cost"]
        totals[names[row["team_id"]]] += row["cost"]
    assert answer["daily_spend"] == [{"date": day, **daily[day]} for day in sorted(daily)]
    assert sorted(answer["teams"]) == sorted(totals)
    assert answer["total_spend_per_team"] == [{"team_id": name, "total_spend": spend} for name, spend in
                                              sorted(totals.items(), key=lambda item: -item[1])]
    assert reports.teams_daily(world.db, datetime(2025, 1, 1, tzinfo=UTC)) == {
        "daily_spend": [], "teams": [], "total_spend_per_team": []}


def test_end_users_in_a_half_open_window(world):
    start, end = DAYS[0] + timedelta(hours=12), DAYS[1] + timedelta(hours=7)  # 07:00 on day 2 is left out
    answer = reports.end_users(world.db, start, end)
    want = defaultdict(lambda: [0, 0.0])
    for row in world.rows:
        if start <= row["start_time"] < end:
            want[row["end_user"]][0] += 1
            want[row["end_user"]][1] += row["cost"]
    assert {e["end_user"]: [e["total_count"], e["total_spend"]] for e in answer} == dict(want)
    assert [e["total_spend"] for e in answer] == sorted((v[1] for v in want.values()), reverse=True)
    one_key = reports.end_users(world.db, *EVERYTHING, key_hash=hash_key(world.keys["b2"]))
    assert {e["end_user"]: e["total_count"] for e in one_key} == {"eu-1": 1, "eu-2": 2}
    assert len(reports.end_users(world.db, *EVERYTHING, limit=1)) == 1


# ---- /spend/logs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("column, value", [("team_id", "team-a"), ("team_id", "team-b"),
                                           ("organization_id", "org-1"), ("end_user", "eu-1"),
                                           ("end_user", "eu-2"), ("user_id", "user-2")])
def test_logs_filter_by_level(world, column, value):
    rows = reports.logs(world.db, **{column: value})
    want = sorted(world.where(**{column: value}), key=lambda row: row["start_time"], reverse=True)
    assert [row["request_id"] for row in rows] == [row["request_id"] for row in want] and rows
    assert all(row[{"user_id": "user"}.get(column, column)] == value for row in rows)


def test_logs_filters_combine_and_unknown_values_match_nothing(world):
    rows = reports.logs(world.db, team_id="team-a", end_user="eu-2", start=DAYS[1])
    assert [row["request_id"] for row in rows] == ["req-6"]
    assert reports.logs(world.db, team_id="no-such-team") == []
    assert reports.logs(world.db, end_user="x' OR '1'='1") == []
    assert len(reports.logs(world.db, limit=3)) == 3
