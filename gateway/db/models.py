"""SQLAlchemy models: virtual keys (stored as hashes, never the key itself)."""

from datetime import datetime
from datetime import timezone

from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import Float
from sqlalchemy import Integer
from sqlalchemy import String
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
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    team_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None: every model
    aliases: Mapped[dict] = mapped_column(JSON, default=dict)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    max_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_duration: Mapped[str | None] = mapped_column(String(16), nullable=True)
    spend: Mapped[float] = mapped_column(Float, default=0.0)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
