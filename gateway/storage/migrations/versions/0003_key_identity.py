"""Spend rows and budget holds name the key by its id (kept across /key/regenerate); keys count their holds.

Revision ID: 0003_key_identity
Revises: 0002_spend

Only columns are added (no table is rewritten), then filled from the key hashes already there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_key_identity"
down_revision = "0002_spend"
branch_labels = None
depends_on = None

_KEYS = sa.table("gateway_keys", sa.column("id", sa.Integer), sa.column("key_hash", sa.String),
                 sa.column("holds", sa.Integer))
_SPEND = sa.table("gateway_spend", sa.column("key_id", sa.Integer), sa.column("key_hash", sa.String))
_HOLDS = sa.table("gateway_budget_holds", sa.column("key_id", sa.Integer), sa.column("key_hash", sa.String),
                  sa.column("amount", sa.Float))


def upgrade():
    """Add gateway_spend.key_id, gateway_budget_holds.key_id and gateway_keys.holds, filled in."""
    with op.batch_alter_table("gateway_keys") as batch:
        batch.add_column(sa.Column("holds", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("gateway_spend") as batch:
        batch.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("gateway_budget_holds") as batch:
        batch.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
    op.create_index("ix_gateway_spend_key_id_start", "gateway_spend", ["key_id", "start_time"])
    op.create_index("ix_gateway_budget_holds_key_id", "gateway_budget_holds", ["key_id"])
    for table in (_SPEND, _HOLDS):
        owner = sa.select(_KEYS.c.id).where(_KEYS.c.key_hash == table.c.key_hash).scalar_subquery()
        op.execute(sa.update(table).where(table.c.key_hash.is_not(None)).values(key_id=owner))
    held = (sa.select(sa.func.count()).select_from(_HOLDS)
            .where(_HOLDS.c.key_id == _KEYS.c.id, _HOLDS.c.amount > 0).scalar_subquery())
    op.execute(sa.update(_KEYS).values(holds=held))


def downgrade():
    """Drop what upgrade() added."""
    op.drop_index("ix_gateway_budget_holds_key_id", table_name="gateway_budget_holds")
    op.drop_index("ix_gateway_spend_key_id_start", table_name="gateway_spend")
    with op.batch_alter_table("gateway_budget_holds") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("gateway_spend") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("gateway_keys") as batch:
        batch.drop_column("holds")
