"""Background jobs run once across a cluster: three gateway instances (two gevent workers each) on
one PostgreSQL schema, background health checks every HEALTH_INTERVAL seconds against a fake
upstream and spend log retention on seeded old rows. Only the worker holding the lease calls the
upstream (one check per interval cluster-wide, not one per instance); the leader's instance is
SIGKILLed and another worker takes over within the lease time and a renewal, with a higher token;
no (job, slot) runs twice and no two runs of a job overlap."""

import os
import signal
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select

from gateway.storage import Database
from gateway.storage.jobs import RUNS
from gateway.storage.lease import LEASES
from gateway.storage.models import SpendDaily
from gateway.storage.models import SpendRow
from tests.fakes.openai_server import FakeOpenAI
from tests.pg import schema_url as pg_schema

MASTER = "sk-master-leases-0123456789"
LEASE = 3.0  # seconds: renewed every second
RENEW = LEASE / 3
HEALTH_INTERVAL = 2
OLD_ROWS, RECENT_ROWS = 2500, 5  # retention deletes in batches of 1000
DEPLOYMENTS = 2  # one group: a healthy deployment and one the fake answers 500
SPEND = SpendRow.__table__


def _until(condition, timeout, what):
    """Poll until `condition()` is true; its answer (fails naming `what` after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return found


def _pings(fake):
    """Health-check calls the fake upstream received (their body is the probe's `ping`)."""
    return sum(1 for r in list(fake.requests)
               if (r.get("json") or {}).get("messages") == [{"role": "user", "content": "ping"}])


def _lease(engine):
    with engine.connect() as connection:
        row = connection.execute(select(LEASES.c.holder, LEASES.c.token)).first()
    return (row.holder, row.token) if row is not None and row.holder else None


def _runs(engine, job=None):
    query = select(RUNS).order_by(RUNS.c.job, RUNS.c.slot)
    if job is not None:
        query = query.where(RUNS.c.job == job)
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def _seed(url):
    """Migrate the schema and put OLD_ROWS 40-day-old and RECENT_ROWS recent ledger rows in it, and
    a daily roll-up row for the old ones."""
    db = Database(url)
    db.migrate()
    old = datetime.now(timezone.utc) - timedelta(days=40)
    recent = datetime.now(timezone.utc) - timedelta(days=1)

    def row(request_id, start):
        return {"request_id": request_id, "call_type": "chat", "status": "success", "cost": 0.001,
                "start_time": start, "end_time": start}

    with db.engine.begin() as connection:
        connection.execute(insert(SPEND), [row(f"old-{i}", old + timedelta(seconds=i)) for i in range(OLD_ROWS)]
                           + [row(f"recent-{i}", recent) for i in range(RECENT_ROWS)])
        connection.execute(insert(SpendDaily.__table__), [{
            "day": old.date().isoformat(), "dims": "seeded", "requests": OLD_ROWS, "prompt_tokens": 0,
            "completion_tokens": 0, "total_tokens": 0, "spend": OLD_ROWS * 0.001}])
    db.engine.dispose()


def _config(fake, url, spool):
    return {"model_list": [{"model_name": "gpt-3.5-turbo", "litellm_params": {
                "model": f"openai/{model}", "api_base": fake.url + "/v1", "api_key": fake.api_key}}
                           for model in ("gpt-3.5-turbo", "fail-500")],
            "general_settings": {"master_key": MASTER, "database_url": url, "spend_spool_dir": str(spool),
                                 "background_health_checks": True, "health_check_interval": HEALTH_INTERVAL,
                                 "background_job_lease_seconds": LEASE,
                                 "maximum_spend_logs_retention_period": "30d",
                                 "maximum_spend_logs_retention_interval": "2s"}}


def _instance_of(holder, gateways):
    """The gateway whose process group holds the lease (the holder names its worker's pid)."""
    pid = int(holder.split("/")[1])
    return next(gw for gw in gateways if os.getpgid(pid) == gw.proc.pid)


def _leads(gateway):
    """The readiness answer of one of this instance's workers that says it leads, else None."""
    for _ in range(8):  # two workers answer readiness in turn
        jobs = requests.get(gateway.url + "/health/readiness", timeout=5).json()["background_jobs"]
        if jobs["leader"]:
            return jobs
    return None


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def test_jobs_run_once_across_three_instances_and_a_new_leader_takes_over_after_a_kill(
        start_gateway, fake, tmp_path):
    with pg_schema() as url:
        _seed(url)
        engine = create_engine(url)
        # No Redis (whatever the environment says): each instance's router state is its own.
        gateways = [start_gateway(_config(fake, url, tmp_path / f"spool{i}"), args=["--num_workers", "2"],
                                  env={"REDIS_URL": "", "REDIS_HOST": ""}, ready=False) for i in range(3)]
        try:
            for gw in gateways:
                gw.wait_ready()
            _run_and_kill(engine, fake, gateways)
        finally:
            for gw in gateways:  # before their schema goes
                gw.stop()
            engine.dispose()


def _run_and_kill(engine, fake, gateways):
    holder, token = _until(lambda: _lease(engine), 20, "a leader")
    leader = _instance_of(holder, gateways)
    readiness = _until(lambda: _leads(leader), 10, "the leader's readiness")
    assert readiness["leases"] == {"background-jobs": token} and readiness["lease_seconds"] == LEASE
    others = [gw for gw in gateways if gw is not leader]
    assert all(_leads(gw) is None for gw in others)

    # Retention: the old rows go (in batches), the recent ones and the daily roll-ups stay.
    with engine.connect() as connection:
        _until(lambda: connection.execute(select(func.count()).select_from(SPEND)).scalar() == RECENT_ROWS,
               20, "old spend rows deleted")
        assert connection.execute(select(func.sum(SpendDaily.__table__.c.requests))).scalar() == OLD_ROWS
    assert sum(r["rows"] or 0 for r in _runs(engine, "spend_log_retention")) == OLD_ROWS

    # Health checks: one call per interval across the cluster (each run checks the one deployment).
    start_runs, start_pings, started = len(_runs(engine, "health_check")), _pings(fake), time.monotonic()
    _until(lambda: len(_runs(engine, "health_check")) >= start_runs + 4, 6 * HEALTH_INTERVAL, "four more checks")
    window = time.monotonic() - started
    window_pings = _pings(fake) - start_pings
    # One instance's worth per interval, not one per instance (3x) nor per worker (6x).
    assert window_pings <= (window / HEALTH_INTERVAL + 1) * DEPLOYMENTS, (window_pings, window)
    print(f"\nhealth-check calls: {window_pings} in {window:.1f}s, {HEALTH_INTERVAL}s interval "
          f"(3 instances x 2 workers, {DEPLOYMENTS} deployments)")
    for gw in gateways:  # the outcome reaches every instance (no Redis: through the database)
        _until(lambda: _failing_deployment_cools(gw), 3 * LEASE, f"the check's outcome on {gw.url}")

    # Kill the leader's whole instance; another worker takes over within the lease and a renewal.
    os.killpg(leader.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait(10)
    new_holder, new_token = _until(lambda: (found := _lease(engine)) and found[0] != holder and found,
                                   LEASE + RENEW + 5, "a new leader")
    takeover = time.monotonic() - killed
    print(f"takeover after SIGKILL: {takeover:.2f}s (lease {LEASE}s, renewed every {RENEW}s)")
    assert takeover <= LEASE + RENEW + 1.0  # a second of slack for a loaded machine
    assert new_token == token + 1
    successor = _instance_of(new_holder, others)
    seen = _until(lambda: _leads(successor), 10, "the successor's readiness")
    assert seen["leases"] == {"background-jobs": new_token}

    # The jobs go on under the new token.
    for job in ("health_check", "spend_log_retention"):
        def ran_twice(job=job):
            return sum(r["token"] == new_token and r["finished_at"] is not None for r in _runs(engine, job)) >= 2
        _until(ran_twice, 6 * HEALTH_INTERVAL, f"{job} under the new leader")
    _check_history(engine, fake, token, new_token)


def _check_history(engine, fake, old_token, new_token):
    """No (job, slot) twice, no two runs of a job overlapping, tokens only going up, and exactly one
    upstream call per health-check run."""
    runs = _runs(engine)
    assert len({(r["job"], r["slot"]) for r in runs}) == len(runs)
    for job in ("health_check", "spend_log_retention"):
        mine = sorted((r for r in runs if r["job"] == job), key=lambda r: r["started_at"])
        assert [r["slot"] for r in mine] == sorted(r["slot"] for r in mine)
        assert {r["token"] for r in mine} <= {old_token, new_token}
        assert [r["token"] for r in mine] == sorted(r["token"] for r in mine)
        for earlier, later in zip(mine, mine[1:]):
            if earlier["finished_at"] is None:  # cut short by the kill: only the killed leader's
                assert earlier["token"] == old_token
                continue
            assert earlier["finished_at"] <= later["started_at"], (earlier, later)
    _until(lambda: _calls_match_runs(engine, fake, old_token), 5, "one upstream call per check")


def _calls_match_runs(engine, fake, old_token):
    """Every finished health-check run made one upstream call, and nothing else called (a run the
    kill cut short may have made its call or not)."""
    health = _runs(engine, "health_check")
    finished = sum(r["finished_at"] is not None for r in health)
    cut = sum(r["finished_at"] is None and r["token"] == old_token for r in health)
    return finished + cut == len(health) and finished * DEPLOYMENTS <= _pings(fake) <= (finished + cut) * DEPLOYMENTS


def _failing_deployment_cools(gateway):
    """Whether the instance's /health/deployments shows both deployments' last checks and the
    failing one cooling down."""
    found = requests.get(gateway.url + "/health/deployments", headers={"Authorization": f"Bearer {MASTER}"},
                         timeout=5).json()["deployments"]
    by_model = {d["model"]: d for d in found}
    good, bad = by_model["openai/gpt-3.5-turbo"], by_model["openai/fail-500"]
    return (good["last_check"] and good["last_check"]["healthy"] and bad["last_check"]
            and not bad["last_check"]["healthy"] and (bad["cooldown_until"] or 0) > time.time())
