"""Admin UI sign-ins: one row per session.

Revision ID: 0008_ui_sessions
Revises: 0007_responses

gateway_ui_sessions keeps each admin UI sign-in by the hash of its cookie's token (never the token,
never a key), who signed in and when the session ends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_ui_sessions"
down_revision = "0007_responses"
branch_labels = None
depends_on = None


def upgrade():
    """Create gateway_ui_sessions."""
    op.create_table(
        "gateway_ui_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_ui_sessions_expires_at", "gateway_ui_sessions", ["expires_at"])


def downgrade():
    """Drop what upgrade() created."""
    op.drop_index("ix_gateway_ui_sessions_expires_at", table_name="gateway_ui_sessions")
    op.drop_table("gateway_ui_sessions")
