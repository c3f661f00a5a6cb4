"""Spend rows name the call's organization and end user; budget holds name every level they hold.

Revision ID: 0005_level_spend
Revises: 0004_hierarchy

Only nullable columns and indexes are added: rows written before keep NULL there (their key,
user and team are still named). A hold of the master key for an end user's budget has no key, so
gateway_budget_holds.key_hash may now be NULL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_level_spend"
down_revision = "0004_hierarchy"
branch_labels = None
depends_on = None

_INDEXES = (("ix_gateway_spend_team_start", ["team_id", "start_time"]),
            ("ix_gateway_spend_user_start", ["user_id", "start_time"]),
            ("ix_gateway_spend_org_start", ["organization_id", "start_time"]),
            ("ix_gateway_spend_end_user_start", ["end_user", "start_time"]))


def upgrade():
    """Add gateway_spend.organization_id and .end_user (indexed with the team and user by time),
    gateway_budget_holds.levels; gateway_budget_holds.key_hash becomes nullable."""
    with op.batch_alter_table("gateway_spend") as batch:
        batch.add_column(sa.Column("organization_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("end_user", sa.String(255), nullable=True))
    for name, columns in _INDEXES:
        op.create_index(name, "gateway_spend", columns)
    with op.batch_alter_table("gateway_budget_holds") as batch:
        batch.add_column(sa.Column("levels", sa.JSON(), nullable=True))
        batch.alter_column("key_hash", existing_type=sa.String(64), nullable=True)


def downgrade():
    """Drop what upgrade() added (holds without a key are dropped first)."""
    op.execute(sa.text("DELETE FROM gateway_budget_holds WHERE key_hash IS NULL"))
    with op.batch_alter_table("gateway_budget_holds") as batch:
        batch.alter_column("key_hash", existing_type=sa.String(64), nullable=False)
        batch.drop_column("levels")
    for name, _ in _INDEXES:
        op.drop_index(name, table_name="gateway_spend")
    with op.batch_alter_table("gateway_spend") as batch:
        batch.drop_column("end_user")
        batch.drop_column("organization_id")
