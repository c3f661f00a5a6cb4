"""Spend ledger, budget holds, and the key columns they need.

Revision ID: 0002_spend
Revises: 0001_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_spend"
down_revision = "0001_keys"
branch_labels = None
depends_on = None


def upgrade():
    """Create gateway_spend and gateway_budget_holds; add reserved and budget_reset_at to keys."""
    with op.batch_alter_table("gateway_keys") as batch:
        batch.add_column(sa.Column("reserved", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("budget_reset_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "gateway_spend",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("key_alias", sa.String(255), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("team_id", sa.String(255), nullable=True),
        sa.Column("call_type", sa.String(32), nullable=False),
        sa.Column("model_group", sa.String(255), nullable=True),
        sa.Column("deployment_id", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_spend_start_time", "gateway_spend", ["start_time"])
    op.create_index("ix_gateway_spend_key_start", "gateway_spend", ["key_hash", "start_time"])
    op.create_table(
        "gateway_budget_holds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_budget_holds_key_hash", "gateway_budget_holds", ["key_hash"])
    op.create_index("ix_gateway_budget_holds_expires_at", "gateway_budget_holds", ["expires_at"])


def downgrade():
    """Drop what upgrade() made."""
    op.drop_table("gateway_budget_holds")
    op.drop_index("ix_gateway_spend_key_start", table_name="gateway_spend")
    op.drop_index("ix_gateway_spend_start_time", table_name="gateway_spend")
    op.drop_table("gateway_spend")
    with op.batch_alter_table("gateway_keys") as batch:
        batch.drop_column("budget_reset_at")
        batch.drop_column("reserved")
