"""Responses API state: one row per stored response.

Revision ID: 0007_responses
Revises: 0006_models

gateway_responses keeps each Responses API answer made with `store: true`: the Response object, the
turn's input items and the whole conversation through it (JSON text), so `previous_response_id`
costs one read.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_responses"
down_revision = "0006_models"
branch_labels = None
depends_on = None


def upgrade():
    """Create gateway_responses."""
    op.create_table(
        "gateway_responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(255), nullable=True),
        sa.Column("team_id", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("input_items", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_responses_key_id", "gateway_responses", ["key_id"])


def downgrade():
    """Drop what upgrade() created."""
    op.drop_index("ix_gateway_responses_key_id", table_name="gateway_responses")
    op.drop_table("gateway_responses")
