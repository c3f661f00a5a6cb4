"""Background jobs that run once across the cluster: every worker of every instance runs a `Jobs`
loop, and only the one holding the lease (gateway/storage/lease.py) runs the jobs.

Each job runs once per slot (its period's index: `int(epoch seconds // interval)`), recorded in
gateway_job_runs under a (job, slot) key in a fenced transaction, so a slot runs once however
often the leader changes; a run cut short (its leader died or lost the lease) is not redone, the
next slot does the work. A job's own writes go through the same fence.

Under gevent two greenlets per worker: one keeps the lease (tries or renews every third of the
lease time), one runs the jobs that are due while this worker leads. A database outage is logged
once and retried at the same pace; it never stops the worker.
"""

import json
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy import update

from gateway.storage.lease import Lease
from gateway.storage.lease import LeaseLost
from gateway.storage.lease import insert_ignoring
from gateway.storage.models import JobRun

log = logging.getLogger("gateway.jobs")

LEASE_NAME = "background-jobs"
RUNS = JobRun.__table__


@dataclass(frozen=True)
class Job:
    """A cluster-wide job: `run(fenced)` does one slot's work, writing only inside `fenced()` (a
    context manager yielding a connection whose transaction commits only while the lease holds),
    and returns what it did (rows deleted, deployments checked), or that and a detail (JSON-able)
    which every other worker hands to `follow(detail)` once it sees the run finished."""

    name: str
    interval: float
    run: object
    follow: object = None


class Jobs:
    """The lease loop and the jobs under it, for one worker (`open_db` -> Database, may raise)."""

    def __init__(self, open_db, jobs, lease_seconds, holder=None):
        self.open_db = open_db
        self.jobs = tuple(jobs)
        self.lease_seconds = float(lease_seconds)
        self.renew_seconds = self.lease_seconds / 3
        self.holder = holder
        self.lease = None
        self._done = {}  # job name -> the last slot claimed here or found claimed
        self._followed = {}  # job name -> the newest run handed to its `follow`
        self._failing = False
        self._greenlets = ()

    # -- the lease ----------------------------------------------------------------------------------

    def _lease(self):
        if self.lease is None:
            self.lease = Lease(self.open_db(), LEASE_NAME, self.lease_seconds, self.holder)
        return self.lease

    def keep(self):
        """One pass of the lease keeper: take or renew the lease; the token, or None."""
        try:
            token = self._lease().acquire()
        except Exception as exc:  # noqa: BLE001  (the database is down: say so once, keep trying)
            self._fail("lease", exc)
            return self.lease.held() if self.lease is not None else None
        self._recovered()
        return token

    def describe(self):
        """For readiness: whether this worker leads and the lease's token as this worker last saw it
        (no database call)."""
        lease = self.lease
        token = lease.held() if lease is not None else None
        return {"leader": token is not None, "lease_seconds": self.lease_seconds,
                "leases": {LEASE_NAME: token}, "jobs": [job.name for job in self.jobs]}

    # -- the jobs ---------------------------------------------------------------------------------

    def run_due(self, now=None):
        """Run every job whose slot has not run yet, while this worker leads: the number run."""
        lease = self.lease
        token = lease.held() if lease is not None else None
        if token is None:
            return 0
        now = time.time() if now is None else now
        ran = 0
        for job in self.jobs:
            slot = int(now // job.interval)
            if self._done.get(job.name) == slot:
                continue
            try:
                ran += self._run(lease, token, job, slot)
            except LeaseLost:
                log.info("background jobs: lease lost during %s; the new leader goes on", job.name)
                return ran
            except Exception as exc:  # noqa: BLE001  (a failed run waits for its next slot)
                log.warning("background jobs: %s failed (%s: %.200s); next slot in %.0fs", job.name,
                            type(exc).__name__, exc, self.next_due())
                return ran
        return ran

    def _run(self, lease, token, job, slot):
        now = lease.clock
        with lease.fenced(token) as connection:
            claimed = connection.execute(insert_ignoring(connection.dialect.name, RUNS).values(
                job=job.name, slot=slot, token=token, holder=lease.holder, started_at=now)).rowcount
        self._done[job.name] = slot
        if claimed != 1:
            return 0  # another leader ran this slot already
        done, detail = _outcome(job.run(lambda: lease.fenced(token)))
        with lease.fenced(token) as connection:
            connection.execute(update(RUNS).where(RUNS.c.job == job.name, RUNS.c.slot == slot)
                               .values(finished_at=now, rows=done, detail=detail))
        self._followed[job.name] = slot  # this worker's own run: nothing to follow
        return 1

    def follow(self):
        """Hand each followed job's newest finished run, once, to its `follow` (every worker, the
        leader's too: another worker of the cluster may have run it). The number handed over."""
        followed = 0
        for job in self.jobs:
            if job.follow is None:
                continue
            query = (select(RUNS.c.slot, RUNS.c.detail).where(RUNS.c.job == job.name, RUNS.c.finished_at.is_not(None))
                     .order_by(RUNS.c.slot.desc()).limit(1))
            try:
                with self.open_db().engine.connect() as connection:
                    row = connection.execute(query).first()
            except Exception:  # noqa: BLE001  (the database is down: keep() says so; the next pass tries again)
                log.debug("background jobs: cannot read %s runs", job.name, exc_info=True)
                continue
            if row is None or self._followed.get(job.name) == row.slot:
                continue
            self._followed[job.name] = row.slot
            if not row.detail:
                continue
            try:
                job.follow(json.loads(row.detail))
            except Exception as exc:  # noqa: BLE001  (a bad run's detail must not stop the loop)
                log.warning("background jobs: following %s slot %s failed (%s)", job.name, row.slot,
                            type(exc).__name__)
                continue
            followed += 1
        return followed

    def next_due(self, now=None):
        """Seconds until the next slot of any job begins."""
        now = time.time() if now is None else now
        return min(((int(now // job.interval) + 1) * job.interval - now for job in self.jobs), default=60.0)

    # -- running under gevent -----------------------------------------------------------------------

    def start(self):
        """The keeper and runner greenlets of this worker."""
        import gevent
        self._greenlets = (gevent.spawn(self._keep_loop), gevent.spawn(self._run_loop))
        return self._greenlets

    def _keep_loop(self):
        import gevent
        while True:
            self.keep()
            self.follow()
            gevent.sleep(self.renew_seconds)

    def _run_loop(self):
        import gevent
        while True:
            if self.run_due():
                continue  # another job may have become due meanwhile
            wait = self.next_due() if self.lease is not None and self.lease.held() else self.renew_seconds
            gevent.sleep(min(wait, self.renew_seconds) + 0.01)

    def _fail(self, what, exc):
        if not self._failing:
            self._failing = True
            log.warning("background jobs: the %s cannot be kept (%s); retrying every %.1fs", what,
                        type(getattr(exc, "__cause__", None) or exc).__name__, self.renew_seconds)
        else:
            log.debug("background jobs: the %s cannot be kept", what, exc_info=True)

    def _recovered(self):
        if self._failing:
            self._failing = False
            log.warning("background jobs: the database answers again")


def _outcome(result):
    """(rows, detail JSON or None) of what a job's run returned: rows, or (rows, detail)."""
    if isinstance(result, tuple):
        rows, detail = result
        return int(rows or 0), json.dumps(detail, separators=(",", ":"))
    return int(result or 0), None
