"""Spend log retention (LiteLLM's `maximum_spend_logs_retention_period`): a cluster-wide job that
deletes gateway_spend rows older than the period.

It deletes in batches of BATCH rows, each in its own short transaction fenced by the lease's token
(gateway/storage/lease.py), so no lock is held for long and a leader that lost the lease deletes
nothing more; at most MAX_BATCHES per run, the rest in the next run. The daily roll-ups
(gateway_spend_daily, gateway_spend_daily_end_users) are kept: usage reports over whole days read
them and stay whole; only the per-call rows (/spend/logs, ranges inside a day) go.
"""

from datetime import datetime
from datetime import timedelta
from datetime import timezone

from sqlalchemy import delete
from sqlalchemy import select

from gateway.infra.coop import let_others_run
from gateway.storage.models import SpendRow

BATCH = 1000  # rows per DELETE (LiteLLM's default batch)
MAX_BATCHES = 500  # per run; the next run goes on from there
SPEND = SpendRow.__table__


def purge(fenced, period_seconds, now=None, batch=BATCH, max_batches=MAX_BATCHES):
    """Delete the rows older than `period_seconds`, `batch` at a time, each batch in a `fenced()`
    transaction: the number deleted."""
    now = datetime.now(timezone.utc) if now is None else now
    cutoff = now - timedelta(seconds=period_seconds)
    oldest = select(SPEND.c.id).where(SPEND.c.start_time < cutoff).order_by(SPEND.c.start_time).limit(batch)
    statement = delete(SPEND).where(SPEND.c.id.in_(oldest.scalar_subquery()))
    deleted = 0
    for _ in range(max_batches):
        with fenced() as connection:
            count = connection.execute(statement).rowcount
        deleted += count
        if count < batch:
            break
        let_others_run()
    return deleted


def job(period_seconds, interval):
    """The retention job for gateway/storage/jobs.py."""
    from gateway.storage.jobs import Job
    return Job("spend_log_retention", interval, lambda fenced: purge(fenced, period_seconds))
