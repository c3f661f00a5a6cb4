"""Each ledger row says how its call went: retries, fallbacks, and the error that ended it.

Revision ID: 0010_spend_outcome
Revises: 0009_spend_daily

The admin UI's Logs page shows them in a row's details. Rows written before have 0 retries and
fallbacks and no error text.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_spend_outcome"
down_revision = "0009_spend_daily"
branch_labels = None
depends_on = None


def upgrade():
    """Add retries, fallbacks and error to gateway_spend."""
    with op.batch_alter_table("gateway_spend") as table:
        table.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("fallbacks", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("error", sa.String(255), nullable=True))


def downgrade():
    """Drop what upgrade() added."""
    with op.batch_alter_table("gateway_spend") as table:
        table.drop_column("error")
        table.drop_column("fallbacks")
        table.drop_column("retries")
