"""Background jobs run once across the cluster: a lease with a fencing token, and a row per run.

Revision ID: 0011_background_jobs
Revises: 0010_spend_outcome

gateway_leases holds each named lease (its holder, fencing token and expiry in epoch seconds of
the database's clock); gateway_job_runs one row per (job, slot), so a job's period runs once
whichever worker of whichever instance leads (gateway/storage/lease.py, jobs.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_background_jobs"
down_revision = "0010_spend_outcome"
branch_labels = None
depends_on = None


def upgrade():
    """Create gateway_leases and gateway_job_runs."""
    op.create_table(
        "gateway_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "gateway_job_runs",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("slot", sa.BigInteger(), primary_key=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )


def downgrade():
    """Drop what upgrade() created."""
    op.drop_table("gateway_job_runs")
    op.drop_table("gateway_leases")
