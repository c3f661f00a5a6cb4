"""The ledger's daily roll-ups, and indexes for the admin UI's log filters.

Revision ID: 0009_spend_daily
Revises: 0008_ui_sessions

gateway_spend_daily sums gateway_spend per UTC day and (key, user, team, organization, model),
gateway_spend_daily_end_users per UTC day and end user; from here on the ledger adds to them in the
transaction that inserts its rows. This revision fills them from the rows already there. gateway_spend gains (model_group|model|status, start_time)
indexes: the Logs page filters by them, newest first.
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0009_spend_daily"
down_revision = "0008_ui_sessions"
branch_labels = None
depends_on = None

ROLLUPS = {"gateway_spend_daily": ("key_id", "key_hash", "user_id", "team_id", "organization_id", "model"),
           "gateway_spend_daily_end_users": ("end_user",)}
SUMS = ("prompt_tokens", "completion_tokens", "total_tokens")
INDEXES = (("ix_gateway_spend_model_group_start", "model_group"), ("ix_gateway_spend_model_start", "model"),
           ("ix_gateway_spend_status_start", "status"))


def upgrade():
    """Create the roll-ups, fill them from gateway_spend, add the log filters' indexes."""
    columns = {"key_id": sa.Integer(), "key_hash": sa.String(64), "end_user": sa.String(255)}
    for name, dimensions in ROLLUPS.items():
        op.create_table(
            name,
            sa.Column("day", sa.String(10), primary_key=True),
            sa.Column("dims", sa.String(64), primary_key=True),
            *(sa.Column(d, columns.get(d, sa.String(255)), nullable=True) for d in dimensions),
            sa.Column("requests", sa.Integer(), nullable=False),
            *(sa.Column(n, sa.BigInteger(), nullable=False) for n in SUMS),
            sa.Column("spend", sa.Float(), nullable=False),
        )
        _fill(name, dimensions)
    for name, column in INDEXES:
        op.create_index(name, "gateway_spend", [column, "start_time"])


def _fill(name, dimensions):
    """One GROUP BY over the existing rows (the day in UTC, as reports count it); the key of each
    roll-up row (sha256 of its dimensions, as gateway/spend/rollup.py makes it) computed here."""
    bind = op.get_bind()
    spend = sa.table("gateway_spend", *(sa.column(n) for n in dimensions + SUMS + ("start_time", "cost")))
    daily = sa.table(name, *(sa.column(n) for n in ("day", "dims", "requests", "spend") + dimensions + SUMS))
    if bind.dialect.name == "sqlite":
        day = sa.func.date(spend.c.start_time)
    else:
        day = sa.func.to_char(sa.func.timezone("UTC", spend.c.start_time), "YYYY-MM-DD")
    dims = [spend.c[n] for n in dimensions]
    query = (sa.select(day.label("day"), *dims, sa.func.count().label("requests"),
                       *(sa.func.coalesce(sa.func.sum(spend.c[n]), 0).label(n) for n in SUMS),
                       sa.func.coalesce(sa.func.sum(spend.c.cost), 0.0).label("spend"))
             .group_by(day, *dims))
    batch = []
    for row in bind.execute(query).mappings():
        text = "\x1f".join("\x1e" if row[n] is None else str(row[n]) for n in dimensions)
        batch.append({**dict(row), "dims": hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()})
        if len(batch) == 5000:
            bind.execute(sa.insert(daily), batch)
            batch = []
    if batch:
        bind.execute(sa.insert(daily), batch)


def downgrade():
    """Drop what upgrade() created."""
    for name, _column in INDEXES:
        op.drop_index(name, table_name="gateway_spend")
    for name in ROLLUPS:
        op.drop_table(name)
