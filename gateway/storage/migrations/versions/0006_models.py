"""Models stored in the database (general_settings.store_model_in_db) and a change count per kind.

Revision ID: 0006_models
Revises: 0005_level_spend

gateway_models holds the deployments added through /model/new, their secret parameter values
encrypted; gateway_change_counts holds one row per kind of change (`models`), raised in the same
transaction as each change, which instances without Redis poll.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_models"
down_revision = "0005_level_spend"
branch_labels = None
depends_on = None


def upgrade():
    """Create gateway_models and gateway_change_counts."""
    op.create_table(
        "gateway_models",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("litellm_params", sa.JSON(), nullable=False),
        sa.Column("model_info", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_models_model_name", "gateway_models", ["model_name"])
    counts = op.create_table(
        "gateway_change_counts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.bulk_insert(counts, [{"name": "models", "count": 0}])  # changes only ever raise it


def downgrade():
    """Drop what upgrade() created."""
    op.drop_table("gateway_change_counts")
    op.drop_index("ix_gateway_models_model_name", table_name="gateway_models")
    op.drop_table("gateway_models")
