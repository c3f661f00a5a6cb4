"""The spend ledger under real gunicorn + gevent gateways (issue #11), on SQLite and PostgreSQL:

* soft budgets (the default) under a race: 50 overlapping calls with a key whose budget is half of
  one call's worst case: exactly one is served (the key has budget left), every other is refused;
* workers SIGKILLed while streams are in flight: every request id ends with exactly one row, the
  cut ones `worker_died`, and their budget holds are released by the replay (not by expiry);
* /key/regenerate while calls are in flight: they settle onto the key, which the new key shows.

Fixtures and helpers come from test_budget.py (same fake upstream, prices and clusters).
"""

import os
import signal
import threading
import time

import pytest
import requests

from tests.integration.test_budget import EPSILON
from tests.integration.test_budget import MASTER
from tests.integration.test_budget import RACE_CALLS
from tests.integration.test_budget import chat_body
from tests.integration.test_budget import fire
from tests.integration.test_budget import launch  # noqa: F401  (fixture)
from tests.integration.test_budget import outcome
from tests.integration.test_budget import real_cost
from tests.integration.test_budget import redis_router
from tests.integration.test_budget import upstream  # noqa: F401  (fixture)
from tests.integration.test_budget import worker_pids
from tests.integration.test_budget import worst_case
from tests.integration.test_limits import shared_redis  # noqa: F401  (the shared Redis fixture)

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {MASTER}"}
SETUPS = {"sqlite-2-workers": ("sqlite", 1), "postgresql-2-instances-redis": ("postgresql", 2)}


def rows_of(cluster, request_ids, timeout=30):
    """{request id: [its rows]} once every request id has a row (rows land after the replay)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = requests.get(cluster.urls[0] + "/spend/logs", headers=ADMIN, params={"limit": 10_000},
                            timeout=30).json()
        found = {rid: [r for r in rows if r["request_id"] == rid] for rid in request_ids}
        if all(found.values()) or time.monotonic() > deadline:
            return found, rows
        time.sleep(0.2)


# ---- soft budgets under a race ---------------------------------------------------------------------

@pytest.mark.parametrize("setup", list(SETUPS))
def test_soft_budget_serves_exactly_one_call_past_the_budget_however_many_race(setup, launch, upstream,  # noqa: F811
                                                                               fake_openai, request):
    database, instances = SETUPS[setup]
    router_settings = None
    if instances > 1:
        request.getfixturevalue("shared_redis")
        router_settings = redis_router()
    cluster = launch(database, instances=instances, router_settings=router_settings)  # budget_mode: soft
    budget = 0.5 * worst_case()  # smaller than any one call: strict would refuse them all
    key, _ = cluster.generate(max_budget=budget)

    answers = fire(cluster.urls, key, [chat_body("priced-slow")] * RACE_CALLS)
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(admitted) == 1, outcome(answers)
    for answer in refused:
        assert (answer.status, answer.code, answer.type) == (429, "insufficient_quota", "budget_exceeded"), answer
        assert answer.message.startswith("Budget has been exceeded!"), answer.message
    # The race was real: the refusals came back while the admitted call still held its worst case.
    assert sum(a.ended < admitted[0].ended for a in refused) >= 10
    assert fake_openai.count("slow") == 1

    info = cluster.settled(key)
    assert info["spend"] == pytest.approx(real_cost())  # over the budget by this one call, no more
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)
    late = cluster.chat(key, "priced")  # spent past the budget: nothing more
    assert (late.status, late.code) == (429, "insufficient_quota"), late


# ---- workers killed while streams are in flight ------------------------------------------------------

def open_stream(url, key):
    """A stream that has reached the client and then stalls in the upstream: (response, request id)."""
    resp = requests.post(url + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, stream=True,
                         json={**chat_body("priced-stall"), "stream": True}, timeout=60)
    assert resp.status_code == 200, resp.text
    lines = resp.iter_lines()
    events = 0
    while events < 3:  # the role chunk and two content chunks: the upstream stalls after them
        events += next(lines).startswith(b"data: {")
    return resp, resp.headers["x-request-id"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_streams_cut_by_killed_workers_get_exactly_one_row_each(database, launch, fake_openai,  # noqa: F811
                                                                monkeypatch):
    monkeypatch.setattr(fake_openai, "stall_seconds", 120.0)  # the streams outlive their workers
    cluster = launch(database)  # budget holds last the router timeout + 60 s: only a replay frees them
    proc = cluster.procs[0]
    key, _ = cluster.generate(max_budget=100.0)
    finished = []
    for _ in range(3):
        resp = requests.post(proc.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json=chat_body("priced"), timeout=30)
        assert resp.status_code == 200, resp.text
        finished.append(resp.headers["x-request-id"])
    streams = [open_stream(proc.url, key) for _ in range(6)]
    cut = [request_id for _resp, request_id in streams]
    assert cluster.info(key)["reserved"] > 0

    workers = worker_pids(proc)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for resp, _ in streams:
        resp.close()
    deadline = time.monotonic() + 30  # gunicorn starts new workers
    while set(worker_pids(proc)) & set(workers) or len(worker_pids(proc)) < 2:
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)
    proc.wait_ready()
    after = requests.post(proc.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json=chat_body("priced"), timeout=30)  # a new worker's ledger wakes up
    assert after.status_code == 200, after.text
    finished.append(after.headers["x-request-id"])

    found, rows = rows_of(cluster, finished + cut)
    assert {rid: len(rs) for rid, rs in found.items()} == {rid: 1 for rid in finished + cut}, proc.log()
    assert len({r["request_id"] for r in rows}) == len(rows)  # one row per request id, for every call
    for request_id in cut:
        row = found[request_id][0]
        assert (row["status"], row["estimated"], row["spend"], row["stream"]) == ("worker_died", True, 0.0, True)
        assert row["model_group"] == "priced-stall"
    for request_id in finished:
        assert found[request_id][0]["status"] == "success"
    info = cluster.settled(key)
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)  # the cut calls' holds: released
    assert info["spend"] == pytest.approx(sum(r["spend"] for r in rows))


# ---- /key/regenerate while calls are in flight ----------------------------------------------------------

@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_calls_in_flight_during_a_regenerate_settle_onto_the_key(database, launch, upstream,  # noqa: F811
                                                                  fake_openai):
    cluster = launch(database)
    key, _ = cluster.generate(max_budget=100.0)
    answers = []
    calls = [chat_body("priced-slow")] * 5
    caller = threading.Thread(target=lambda: answers.extend(fire(cluster.urls, key, calls)))
    caller.start()
    deadline = time.monotonic() + 10
    while fake_openai.count("slow") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_openai.count("slow") == 5  # every call holds budget and waits in the upstream
    new_key = cluster.admin("POST", "/key/regenerate", json={"key": key})["key"]
    caller.join(60)
    assert [a.status for a in answers] == [200] * 5, outcome(answers)

    info = cluster.settled(new_key)
    assert info["reserved"] == pytest.approx(0.0, abs=EPSILON)
    assert info["spend"] == pytest.approx(5 * real_cost())
    logs = cluster.admin("GET", "/spend/logs", params={"api_key": new_key})
    assert len(logs) == 5 and sum(r["spend"] for r in logs) == pytest.approx(info["spend"])
