"""The management hierarchy: organizations, teams, users, their memberships, end users.

Revision ID: 0004_hierarchy
Revises: 0003_key_identity

Only tables and indexes are added: gateway_keys keeps every row. Its user_id / team_id columns are
the links; every team and user a stored key names gets its row here (no budget, no limit, every
model; users as internal_user), so those keys work as before, and a key whose team or user row is
missing later on is one whose team or user was deleted.
"""

from datetime import datetime
from datetime import timezone

import sqlalchemy as sa
from alembic import op

revision = "0004_hierarchy"
down_revision = "0003_key_identity"
branch_labels = None
depends_on = None


def _level_columns():
    """The columns every level has (gateway.storage.models._Level)."""
    return [
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("max_budget", sa.Float(), nullable=True),
        sa.Column("budget_duration", sa.String(16), nullable=True),
        sa.Column("budget_reset_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spend", sa.Float(), nullable=False, server_default="0"),
        sa.Column("reserved", sa.Float(), nullable=False, server_default="0"),
        sa.Column("holds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade():
    """Create the hierarchy's tables; index gateway_keys by its owners."""
    op.create_table(
        "gateway_organizations",
        sa.Column("organization_id", sa.String(255), primary_key=True),
        sa.Column("organization_alias", sa.String(255), nullable=True),
        *_level_columns(),
    )
    op.create_table(
        "gateway_teams",
        sa.Column("team_id", sa.String(255), primary_key=True),
        sa.Column("team_alias", sa.String(255), nullable=True),
        sa.Column("organization_id", sa.String(255), nullable=True),
        *_level_columns(),
    )
    op.create_index("ix_gateway_teams_organization_id", "gateway_teams", ["organization_id"])
    op.create_table(
        "gateway_users",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("user_email", sa.String(255), nullable=True),
        sa.Column("user_alias", sa.String(255), nullable=True),
        sa.Column("user_role", sa.String(32), nullable=False, server_default="internal_user"),
        *_level_columns(),
    )
    op.create_index("ix_gateway_users_email", "gateway_users", [sa.text("lower(user_email)")], unique=True)
    op.create_table(
        "gateway_team_members",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("team_id", "user_id", name="uq_gateway_team_members"),
    )
    op.create_index("ix_gateway_team_members_team_id", "gateway_team_members", ["team_id"])
    op.create_index("ix_gateway_team_members_user_id", "gateway_team_members", ["user_id"])
    op.create_table(
        "gateway_organization_members",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("user_role", sa.String(32), nullable=False, server_default="internal_user"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("organization_id", "user_id", name="uq_gateway_organization_members"),
    )
    op.create_index("ix_gateway_organization_members_organization_id", "gateway_organization_members",
                    ["organization_id"])
    op.create_index("ix_gateway_organization_members_user_id", "gateway_organization_members", ["user_id"])
    op.create_table(
        "gateway_end_users",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("alias", sa.String(255), nullable=True),
        *_level_columns(),
    )
    op.create_index("ix_gateway_keys_team_id", "gateway_keys", ["team_id"])
    op.create_index("ix_gateway_keys_user_id", "gateway_keys", ["user_id"])
    _backfill()


def _backfill():
    """A row for every team and user the stored keys name."""
    keys = sa.table("gateway_keys", sa.column("team_id", sa.String), sa.column("user_id", sa.String))
    connection = op.get_bind()
    now = datetime.now(timezone.utc)
    for name, extra in (("team_id", {}), ("user_id", {"user_role": "internal_user"})):
        column = keys.c[name]
        ids = sorted(connection.execute(sa.select(column).where(column.is_not(None)).distinct()).scalars())
        table = sa.table("gateway_teams" if name == "team_id" else "gateway_users",
                         sa.column(name, sa.String), sa.column("metadata", sa.JSON),
                         sa.column("created_at", sa.DateTime(timezone=True)),
                         sa.column("updated_at", sa.DateTime(timezone=True)),
                         *[sa.column(c, sa.String) for c in extra])
        rows = [{name: value, "metadata": {}, "created_at": now, "updated_at": now, **extra} for value in ids]
        for start in range(0, len(rows), 1000):
            op.bulk_insert(table, rows[start:start + 1000])


def downgrade():
    """Drop what upgrade() made."""
    op.drop_index("ix_gateway_keys_user_id", table_name="gateway_keys")
    op.drop_index("ix_gateway_keys_team_id", table_name="gateway_keys")
    for table in ("gateway_end_users", "gateway_organization_members", "gateway_team_members", "gateway_users",
                  "gateway_teams", "gateway_organizations"):
        op.drop_table(table)
