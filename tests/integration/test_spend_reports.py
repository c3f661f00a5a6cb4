"""LiteLLM's spend report routes and the /spend/logs level filters through a real gunicorn gateway
(2 gevent workers, SQLite and PostgreSQL) in front of the fake OpenAI upstream: keys of two teams
(one in an organization) call with two end users (the `user` field) through the openai SDK, then
every report is checked against the ledger rows /spend/logs shows, summed here. Bad input is a 400
in the OpenAI envelope naming the parameter; only proxy admins and their viewers read the reports.
"""

import contextlib
import json
import math
import subprocess
import time
from collections import defaultdict
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import openai
import pytest
import requests

from gateway.access.keys import hash_key
from tests.integration.conftest import openai_config
from tests.pg import schema_url as pg_schema

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
MODEL = "gpt-3.5-turbo"
# (key, end user, calls)
PLAN = [("a", "eu-1", 2), ("a", "eu-2", 1), ("b", "eu-1", 1), ("b", "eu-2", 2), ("b", None, 1)]
REPORTS = ["/global/spend/report", "/global/spend/keys", "/global/spend/models", "/global/spend/teams",
           "/global/spend/end_users"]


def approx(value):
    return pytest.approx(value, rel=1e-9, abs=1e-15)


class Reports:
    """The gateway, its keys, and reading its routes."""

    def __init__(self, url):
        self.url = url

    def get(self, path, token=MASTER, **params):
        return requests.get(self.url + path, params=params, headers={"Authorization": f"Bearer {token}"},
                            timeout=30)

    def post(self, path, body=None, token=MASTER, headers=None, **kwargs):
        return requests.post(self.url + path, json=body, timeout=30, **kwargs,
                             headers={"Authorization": f"Bearer {token}", **(headers or {})})

    def ok(self, resp):
        assert resp.status_code == 200, (resp.request.url, resp.status_code, resp.text)
        return resp.json()

    def curl(self, script):
        """A curl command as LiteLLM's docs write it (their host and port replaced)."""
        script = script.replace("http://localhost:4000", self.url)
        done = subprocess.run(["bash", "-c", script + " --silent --show-error --fail-with-body"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (script, done.stdout, done.stderr)
        return json.loads(done.stdout)


def start(start_gateway, fake_openai, database, stack, tmp_path):
    config = openai_config(fake_openai, master_key=MASTER)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'reports.sqlite'}"}
    if database == "postgresql":
        config["general_settings"]["database_url"] = stack.enter_context(pg_schema())
    gw = start_gateway(config, args=["--num_workers", "2"], env=env)
    stack.callback(gw.stop)  # before the schema is dropped
    return Reports(gw.url)


def setup_hierarchy(gw):
    """An organization with team A (aliased), team B outside it, a user in each with a key, a viewer."""
    gw.ok(gw.post("/organization/new", {"organization_id": "rep-org", "organization_alias": "Reports Org"}))
    gw.ok(gw.post("/team/new", {"team_id": "rep-a", "team_alias": "Reports A", "organization_id": "rep-org"}))
    gw.ok(gw.post("/team/new", {"team_id": "rep-b"}))
    keys = {}
    for name, team in (("a", "rep-a"), ("b", "rep-b")):
        gw.ok(gw.post("/user/new", {"user_id": f"user-{name}", "teams": [team], "user_role": "internal_user",
                                    "auto_create_key": False}))
        keys[name] = gw.ok(gw.post("/key/generate", {"user_id": f"user-{name}", "team_id": team,
                                                     "key_alias": f"key-{name}"}))["key"]
    keys["viewer"] = gw.ok(gw.post("/user/new", {"user_id": "auditor", "user_role": "proxy_admin_viewer"}))["key"]
    keys["plain"] = gw.ok(gw.post("/key/generate", {}))["key"]
    return keys


def make_calls(gw, keys):
    ids = []
    for name, end_user, count in PLAN:
        client = openai.OpenAI(base_url=gw.url, api_key=keys[name], max_retries=0, timeout=30)
        extra = {"user": end_user} if end_user else {}
        for _ in range(count):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": f"a poem for {end_user}"}], **extra)
            ids.append(raw.headers["x-request-id"])
    return ids


def ledger(gw, ids, timeout=15.0):
    """Every row of the calls, once all are written (rows land after the answer has gone)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = gw.ok(gw.get("/spend/logs", limit=10_000))
        if {row["request_id"] for row in rows} >= set(ids):
            return [row for row in rows if row["request_id"] in set(ids)]
        assert time.monotonic() < deadline, "the calls' spend rows did not all appear"
        time.sleep(0.1)


def total(rows, field="spend"):
    return math.fsum(row[field] for row in rows)


def group(rows, *fields):
    out = defaultdict(list)
    for row in rows:
        out[tuple(row[f] for f in fields) if len(fields) > 1 else row[fields[0]]].append(row)
    return out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_reports_equal_the_ledger_rows(start_gateway, fake_openai, database, tmp_path):
    with contextlib.ExitStack() as stack:
        gw = start(start_gateway, fake_openai, database, stack, tmp_path)
        keys = setup_hierarchy(gw)
        ids = make_calls(gw, keys)
        rows = ledger(gw, ids)
        assert len(rows) == sum(count for _, _, count in PLAN) and all(row["spend"] > 0 for row in rows)
        hashes = {name: hash_key(keys[name]) for name in ("a", "b")}
        names = {"rep-a": "Reports A", "rep-b": "rep-b"}
        answers = []

        # /spend/logs: a level's rows, under LiteLLM's names for the filters too
        for params, want in (({"team_id": "rep-a"}, [r for r in rows if r["team_id"] == "rep-a"]),
                             ({"organization_id": "rep-org"}, [r for r in rows if r["team_id"] == "rep-a"]),
                             ({"end_user": "eu-1"}, [r for r in rows if r["end_user"] == "eu-1"]),
                             ({"customer_id": "eu-2"}, [r for r in rows if r["end_user"] == "eu-2"]),
                             ({"team_id": "rep-b", "end_user": "eu-2"},
                              [r for r in rows if (r["team_id"], r["end_user"]) == ("rep-b", "eu-2")])):
            got = gw.ok(gw.get("/spend/logs", **params))
            assert sorted(r["request_id"] for r in got) == sorted(r["request_id"] for r in want) and want, params

        today = datetime.now(timezone.utc).date()
        span = {"start_date": (today - timedelta(days=1)).isoformat(),
                "end_date": (today + timedelta(days=1)).isoformat()}
        by_day = defaultdict(list)
        for row in rows:
            by_day[datetime.fromisoformat(row["startTime"]).astimezone(timezone.utc).date()].append(row)

        # group_by=team (the default), as the docs' curl asks for it
        docs = gw.curl("""curl -X GET 'http://localhost:4000/global/spend/report?start_date=2024-04-01&end_date=2024-06-30&group_by=team' \\
  -H 'Authorization: Bearer sk-1234'""")
        assert docs == []  # nothing was spent in 2024
        report = gw.ok(gw.get("/global/spend/report", **span))
        assert report == gw.ok(gw.get("/global/spend/report", group_by="team", **span))
        answers.append(report)
        assert [entry["group_by_day"] for entry in report] == [
            f"{day.isoformat()}T00:00:00+00:00" for day in sorted(by_day)]
        for entry in report:
            day_rows = by_day[datetime.fromisoformat(entry["group_by_day"]).date()]
            teams = group(day_rows, "team_id")
            assert {t["team_id"]: t["team_name"] for t in entry["teams"]} == {t: names[t] for t in teams}
            for team in entry["teams"]:
                team_rows = teams[team["team_id"]]
                assert team["total_spend"] == approx(total(team_rows))
                cells = group(team_rows, "model", "api_key")
                assert {(m["model"], m["api_key"]): (m["spend"], m["total_tokens"]) for m in team["metadata"]} == {
                    cell: (approx(total(cell_rows)), sum(r["total_tokens"] for r in cell_rows))
                    for cell, cell_rows in cells.items()}

        # group_by=customer
        report = gw.ok(gw.get("/global/spend/report", group_by="customer", **span))
        answers.append(report)
        for entry in report:
            customers = group(by_day[datetime.fromisoformat(entry["group_by_day"]).date()], "end_user")
            assert {c["customer"]: c["total_spend"] for c in entry["customers"]} == {
                eu: approx(total(eu_rows)) for eu, eu_rows in customers.items()}

        # group_by=api_key, one key (the key itself or its hash), one internal user
        report = gw.ok(gw.get("/global/spend/report", group_by="api_key", **span))
        answers.append(report)
        keyed = group(rows, "api_key")
        assert {k["api_key"]: (k["total_cost"], k["total_input_tokens"], k["total_output_tokens"]) for k in report} == {
            h: (approx(total(r)), sum(x["prompt_tokens"] for x in r), sum(x["completion_tokens"] for x in r))
            for h, r in keyed.items()}
        for query in ({"api_key": keys["a"]}, {"api_key": hashes["a"]}, {"internal_user_id": "user-a"}):
            one = gw.ok(gw.get("/global/spend/report", **query, **span))
            assert [k["api_key"] for k in one] == [hashes["a"]]
            assert one[0]["total_cost"] == approx(total(keyed[hashes["a"]]))
            assert one[0]["model_details"][0]["model"] == keyed[hashes["a"]][0]["model"]
        pair = gw.ok(gw.get("/global/spend/report", team_id="rep-b", customer_id="eu-2", **span))
        answers.append(pair)
        want = [r for r in rows if (r["team_id"], r["end_user"]) == ("rep-b", "eu-2")]
        got = [tc for entry in pair for tc in entry["teams_customers"]]
        assert {(tc["team_name"], tc["customer"]) for tc in got} == {("rep-b", "eu-2")}
        assert math.fsum(tc["total_spend"] for tc in got) == approx(total(want))

        # /global/spend/keys: every key that spent, largest first, named by hint and alias
        spent = gw.ok(gw.get("/global/spend/keys"))
        answers.append(spent)
        assert {k["api_key"]: k["total_spend"] for k in spent} == {h: approx(total(r)) for h, r in keyed.items()}
        assert [k["total_spend"] for k in spent] == sorted((k["total_spend"] for k in spent), reverse=True)
        for name, entry in ((n, next(k for k in spent if k["api_key"] == hashes[n])) for n in ("a", "b")):
            assert (entry["key_alias"], entry["key_name"], entry["team_id"]) == (
                f"key-{name}", "sk-..." + keys[name][-4:], f"rep-{name}")
        assert len(gw.ok(gw.get("/global/spend/keys", limit=1))) == 1

        # /global/spend/models
        models = gw.ok(gw.get("/global/spend/models"))
        answers.append(models)
        assert models == [{"model": m, "total_spend": approx(total(r))} for m, r in group(rows, "model").items()]

        # /global/spend/teams
        teams = gw.ok(gw.get("/global/spend/teams"))
        answers.append(teams)
        per_team = {names[t]: approx(total(r)) for t, r in group(rows, "team_id").items()}
        assert {t["team_id"]: t["total_spend"] for t in teams["total_spend_per_team"]} == per_team
        assert sorted(teams["teams"]) == sorted(per_team)
        for day in teams["daily_spend"]:
            day_rows = by_day[datetime.fromisoformat(day["date"]).date()]
            assert {k: v for k, v in day.items() if k != "date"} == {
                names[t]: approx(total(r)) for t, r in group(day_rows, "team_id").items()}

        # /global/spend/end_users: POST with a body (LiteLLM's way), an empty POST, and GET
        per_end_user = {eu: (len(r), approx(total(r))) for eu, r in group(rows, "end_user").items()}
        for resp in (gw.post("/global/spend/end_users", {}), gw.post("/global/spend/end_users"),
                     gw.get("/global/spend/end_users")):
            users = gw.ok(resp)
            answers.append(users)
            assert {u["end_user"]: (u["total_count"], u["total_spend"]) for u in users} == per_end_user
        of_b = gw.ok(gw.post("/global/spend/end_users", {"api_key": keys["b"]}))
        assert {u["end_user"]: u["total_count"] for u in of_b} == {"eu-1": 1, "eu-2": 2, None: 1}
        later = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
        assert gw.ok(gw.post("/global/spend/end_users", {"startTime": later})) == []

        # never a key in an answer
        text = json.dumps(answers)
        for key in keys.values():
            assert key not in text

        # proxy admins' viewers read them; a virtual key (an internal user's, or one without a user) cannot
        for path in REPORTS:
            params = span if path.endswith("/report") else {}
            assert gw.get(path, token=keys["viewer"], **params).status_code == 200, path
            for name, code in (("a", "role_not_allowed"), ("plain", "master_key_required")):
                tries = [gw.get(path, token=keys[name], **params)]
                if path.endswith("/end_users"):
                    tries.append(gw.post(path, {}, token=keys[name]))
                for resp in tries:
                    assert resp.status_code == 403, (path, name, resp.status_code)
                    error = resp.json()["error"]
                    assert error["code"] == code and error["type"] == "permission_error"
                    assert keys[name] not in resp.text


BAD = [
    ("/global/spend/report", {}, "start_date"),
    ("/global/spend/report", {"start_date": "2024-01-01"}, "end_date"),
    ("/global/spend/report", {"start_date": "yesterday", "end_date": "2024-01-02"}, "start_date"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-13-01"}, "end_date"),
    ("/global/spend/report", {"start_date": "2024-01-01\x00", "end_date": "2024-01-02"}, "start_date"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-01-02", "group_by": "weekly"},
     "group_by"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-01-02", "team_id": "t\x00"},
     "team_id"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-01-02", "customer_id": "\x00"},
     "customer_id"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-01-02", "api_key": "sk-\x00"},
     "api_key"),
    ("/global/spend/report", {"start_date": "2024-01-01", "end_date": "2024-01-02",
                              "internal_user_id": "u" * 2000}, "internal_user_id"),
    ("/global/spend/keys", {"limit": "0"}, "limit"),
    ("/global/spend/keys", {"limit": "all"}, "limit"),
    ("/global/spend/models", {"limit": "-1"}, "limit"),
    ("/global/spend/end_users", {"startTime": "soon"}, "startTime"),
    ("/global/spend/end_users", {"api_key": "\x00"}, "api_key"),
    ("/spend/logs", {"team_id": "t\x00"}, "team_id"),
    ("/spend/logs", {"organization_id": "o" * 2000}, "organization_id"),
    ("/spend/logs", {"end_user": "\x00"}, "end_user"),
    ("/spend/logs", {"customer_id": "c\x00"}, "customer_id"),
]
BAD_BODIES = [
    ({"startTime": "not a time"}, "startTime"),
    ({"endTime": "2024-02-30T00:00:00"}, "endTime"),
    ({"api_key": 12345}, "api_key"),
    ({"startTime": ["2024-01-01"]}, "startTime"),
    ({"api_key": "sk-\x00"}, "api_key"),
]


def test_bad_report_input_is_a_400_naming_the_parameter(start_gateway, fake_openai, tmp_path):
    with contextlib.ExitStack() as stack:
        gw = start(start_gateway, fake_openai, "sqlite", stack, tmp_path)
        wrong = []
        for path, params, param in BAD:
            resp = gw.get(path, **params)
            error = (resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                     ).get("error", {})
            if resp.status_code != 400 or error.get("param") != param or error.get("type") != "invalid_request_error":
                wrong.append((path, params, resp.status_code, resp.text[:200]))
        for body, param in BAD_BODIES:
            resp = gw.post("/global/spend/end_users", body)
            if resp.status_code != 400 or resp.json()["error"].get("param") != param:
                wrong.append(("POST end_users", body, resp.status_code, resp.text[:200]))
        for raw in (b"[1, 2]", b"{not json", b'"text"'):
            resp = gw.post("/global/spend/end_users", data=raw, headers={"Content-Type": "application/json"})
            if resp.status_code != 400 or resp.json()["error"]["type"] != "invalid_request_error":
                wrong.append(("POST end_users", raw, resp.status_code, resp.text[:200]))
        assert not wrong, "\n".join(map(str, wrong))
        # hostile text is a value to compare, never SQL: it matches nothing and the store is intact
        for hostile in ("x' OR '1'='1", "'; DROP TABLE gateway_spend; --"):
            assert gw.ok(gw.get("/spend/logs", team_id=hostile, end_user=hostile)) == []
            assert gw.ok(gw.get("/global/spend/report", start_date="2024-01-01", end_date="2099-01-01",
                                team_id=hostile, customer_id=hostile)) == []
        assert gw.ok(gw.get("/global/spend/keys")) == []
