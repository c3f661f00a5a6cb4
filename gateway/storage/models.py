"""SQLAlchemy models: virtual keys (stored as hashes, never the key itself), the spend ledger and budget
holds, the management hierarchy (organizations, teams, users, memberships, end users), and the
background jobs' lease and runs."""

from datetime import datetime
from datetime import timezone

from sqlalchemy import JSON
from sqlalchemy import BigInteger
from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import Float
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy import func
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column


def utcnow():
    """Timezone-aware now, for defaults."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the gateway's tables."""


class VirtualKey(Base):
    """A key handed out by /key/generate: its rules, and its spend so far."""

    __tablename__ = "gateway_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_hint: Mapped[str] = mapped_column(String(16))  # "sk-...wxyz": enough to tell keys apart
    key_alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)  # its owner
    team_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None: every model
    aliases: Mapped[dict] = mapped_column(JSON, default=dict)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    max_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_duration: Mapped[str | None] = mapped_column(String(16), nullable=True)
    spend: Mapped[float] = mapped_column(Float, default=0.0)  # since the last budget reset
    reserved: Mapped[float] = mapped_column(Float, default=0.0)  # sum of this key's live budget holds
    holds: Mapped[int] = mapped_column(Integer, default=0)  # how many of them (soft budgets: none in flight?)
    budget_reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class SpendRow(Base):
    """One request: who called, what served it, the tokens and what they cost (USD)."""

    __tablename__ = "gateway_spend"
    __table_args__ = (Index("ix_gateway_spend_key_start", "key_hash", "start_time"),
                      Index("ix_gateway_spend_key_id_start", "key_id", "start_time"),
                      Index("ix_gateway_spend_team_start", "team_id", "start_time"),
                      Index("ix_gateway_spend_user_start", "user_id", "start_time"),
                      Index("ix_gateway_spend_org_start", "organization_id", "start_time"),
                      Index("ix_gateway_spend_end_user_start", "end_user", "start_time"),
                      Index("ix_gateway_spend_model_group_start", "model_group", "start_time"),
                      Index("ix_gateway_spend_model_start", "model", "start_time"),
                      Index("ix_gateway_spend_status_start", "status", "start_time"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's identity (gateway_keys.id), which /key/regenerate keeps; key_hash is the key used.
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: master key or no auth
    key_alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    team_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    organization_id: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the team's
    end_user: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the call's `user` field
    call_type: Mapped[str] = mapped_column(String(32))
    model_group: Mapped[str | None] = mapped_column(String(255), nullable=True)
    deployment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)  # no upstream usage: counted here
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32))  # success, error, client_disconnected, worker_died, quarantined
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # upstream attempts past the first
    fallbacks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # other groups tried
    error: Mapped[str | None] = mapped_column(String(255), nullable=True)  # "<status> <code>: <message>"
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _Daily:
    """What both daily roll-ups sum (gateway/spend/rollup.py)."""

    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spend: Mapped[float] = mapped_column(Float, default=0.0)


class SpendDaily(_Daily, Base):
    """The ledger rolled up by UTC day (gateway/spend/rollup.py): one row per day and combination of
    key, user, team, organization and model, kept in the transaction that inserts the ledger's rows
    (so it holds exactly the rows gateway_spend holds). Reports over whole days read it instead of
    every row. `dims` is the sha256 of the combination (its unique key: a unique index over five
    long text columns would pass PostgreSQL's index row limit)."""

    __tablename__ = "gateway_spend_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # 'YYYY-MM-DD', UTC
    dims: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    team_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    organization_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)


class SpendDailyEndUser(_Daily, Base):
    """The ledger rolled up by UTC day and end user (the call's `user`), kept as SpendDaily is: end
    users may be many more than keys, so they have a roll-up of their own."""

    __tablename__ = "gateway_spend_daily_end_users"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    dims: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the end user
    end_user: Mapped[str | None] = mapped_column(String(255), nullable=True)


class BudgetHold(Base):
    """The worst-case cost of a call in flight, held against every budget it must fit (its key's and
    the levels' above it); settled or expired."""

    __tablename__ = "gateway_budget_holds"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # the key held against
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # None: master key
    amount: Mapped[float] = mapped_column(Float)
    # Every level above the key held too: [[kind, id], ...] (user, team, organization, end_user).
    levels: Mapped[list | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class _Level:
    """What every level of the hierarchy has (as gateway_keys does): allowed models, a budget and its
    period, spend and the holds of calls in flight, rate limits, metadata, a block, and timestamps."""

    models: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None or []: all the level above allows
    max_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_duration: Mapped[str | None] = mapped_column(String(16), nullable=True)
    budget_reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    spend: Mapped[float] = mapped_column(Float, default=0.0)  # since the last budget reset
    reserved: Mapped[float] = mapped_column(Float, default=0.0)  # sum of the live budget holds
    holds: Mapped[int] = mapped_column(Integer, default=0)  # how many of them
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Organization(_Level, Base):
    """The top level: owns teams; its models and block bound every key of its teams."""

    __tablename__ = "gateway_organizations"

    organization_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    organization_alias: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Team(_Level, Base):
    """A team: members with roles, keys made with its team_id, at most one organization."""

    __tablename__ = "gateway_teams"

    team_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    team_alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    organization_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)


class User(_Level, Base):
    """An internal user: a role on the proxy, keys it owns, teams it is a member of."""

    __tablename__ = "gateway_users"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_role: Mapped[str] = mapped_column(String(32), default="internal_user")


# One user per email, whatever its case (LiteLLM compares emails case-insensitively).
Index("ix_gateway_users_email", func.lower(User.user_email), unique=True)


class TeamMember(Base):
    """A user's membership of a team, with its role there (`admin` or `user`)."""

    __tablename__ = "gateway_team_members"
    __table_args__ = (UniqueConstraint("team_id", "user_id", name="uq_gateway_team_members"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OrganizationMember(Base):
    """A user's membership of an organization, with its role there (`org_admin`, `internal_user`, ...)."""

    __tablename__ = "gateway_organization_members"
    __table_args__ = (UniqueConstraint("organization_id", "user_id", name="uq_gateway_organization_members"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    user_role: Mapped[str] = mapped_column(String(32), default="internal_user")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EndUser(_Level, Base):
    """An end user (LiteLLM's customer): the `user` field of a call."""

    __tablename__ = "gateway_end_users"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    alias: Mapped[str | None] = mapped_column(String(255), nullable=True)


class StoredModel(Base):
    """A deployment added through /model/new (general_settings.store_model_in_db): served beside the
    config file's. Secret litellm_params values are stored encrypted (gateway/infra/secrets.py)."""

    __tablename__ = "gateway_models"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # its model_info.id
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    litellm_params: Mapped[dict] = mapped_column(JSON, default=dict)
    model_info: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ChangeCount(Base):
    """How many times a kind of stored thing changed (`models`): raised in the transaction of every
    change, so an instance without Redis notices one (deletions included) by reading one row."""

    __tablename__ = "gateway_change_counts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class StoredResponse(Base):
    """A Responses API answer kept for `previous_response_id`, GET and /input_items (store: true):
    written before the answer completes, readable by its owner only (the key's id, which
    /key/regenerate keeps, or its team)."""

    __tablename__ = "gateway_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # resp_ + 192 random bits
    key_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    team_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # JSON text (written and read with orjson: storage/responses.py)
    input_items: Mapped[str] = mapped_column(Text)  # this turn's input items
    context: Mapped[str] = mapped_column(Text)  # the conversation through this answer
    response: Mapped[str] = mapped_column(Text)  # the Response object
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UISession(Base):
    """A sign-in to the admin UI (gateway/ui): the session cookie's hash, who signed in (the master
    key or UI_USERNAME: "admin"; a virtual key: "key" with the key's hash, never the key) and when it
    ends. Signing out deletes the row; an expired row is refused and swept at the next sign-in."""

    __tablename__ = "gateway_ui_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    kind: Mapped[str] = mapped_column(String(16))  # admin, key
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LeaseRow(Base):
    """A named lease (gateway/storage/lease.py): who holds it, its fencing token (raised each time the
    holder changes) and until when, in epoch seconds of the database's clock."""

    __tablename__ = "gateway_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)  # host/pid/random of a worker
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class JobRun(Base):
    """One run of a background job (gateway/storage/jobs.py): one row per (job, slot), the slot being
    the run's period index, so a slot runs once across the cluster and across leader changes; the
    lease's token and holder that ran it; started/finished in epoch seconds of the database's clock
    (finished_at None: the run stopped midway, its leader died or lost the lease)."""

    __tablename__ = "gateway_job_runs"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)  # what the run did (rows deleted, checks)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON for the other workers (health outcomes)
