"""SQL tables: configuration (authoritative, edited through the API) and the release read model.

The release tables are a projection of the event stream: they can be dropped and
rebuilt (``ferry projections rebuild``); ``projection_position`` records how far the
stream has been applied, written in the same transaction as the rows it covers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ferry.domain.events import utcnow
from ferry.domain.validation import MAX_URL_LENGTH
from ferry.domain.vocabulary import (
    CREDENTIAL_KINDS,
    DELIVERY_STATUSES,
    HOST_KEY_POLICIES,
    ROLES,
    WEBHOOK_KINDS,
    sql_in,
)
from ferry.domain.webhooks.routing import MAX_URL as MAX_WEBHOOK_URL

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps no offset, so store UTC and re-attach it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: ferry stores timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --- configuration -------------------------------------------------------------
class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (CheckConstraint(sql_in("kind", CREDENTIAL_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token, never plaintext
    summary: Mapped[str] = mapped_column(String(255), default="")  # public fingerprint or hint
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Credential(id={self.id!r}, name={self.name!r}, kind={self.kind!r})"


class Host(Base):
    __tablename__ = "hosts"
    __table_args__ = (CheckConstraint(sql_in("host_key_policy", HOST_KEY_POLICIES), name="host_key_policy"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    user: Mapped[str] = mapped_column(String(100))
    credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("credentials.id", ondelete="RESTRICT"), index=True
    )
    host_key: Mapped[str | None] = mapped_column(Text)
    host_key_policy: Mapped[str] = mapped_column(String(10), default="pinned")
    # the agents that may serve this host (ferry.domain.agentgroups), checked by the repo
    agent_group: Mapped[str] = mapped_column(String(50), default="default", server_default="default")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    credential: Mapped[Credential | None] = relationship(lazy="joined")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    repo_url: Mapped[str] = mapped_column(String(MAX_URL_LENGTH))
    repo_credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("credentials.id", ondelete="RESTRICT"), index=True
    )
    # The fields of ferry.domain.events.Recipe except repo_url and repo_credential.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    repo_credential: Mapped[Credential | None] = relationship(lazy="joined")
    environments: Mapped[list[Environment]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )


class ProjectVariable(Base):
    """A project's secret variable: given to its build hooks and host commands, masked in their output."""

    __tablename__ = "project_variables"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token, never plaintext
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"ProjectVariable(project_id={self.project_id!r}, name={self.name!r})"


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    max_failures: Mapped[int] = mapped_column(Integer, default=0)
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    # four-eyes: False refuses an approval by the release's requester (ferry.domain.release.decide)
    allow_self_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    rollback_on_failure: Mapped[bool] = mapped_column(Boolean, default=True)
    # rollout strategy (ferry.domain.events.Plan): one of vocabulary.STRATEGIES, checked by the repo
    strategy: Mapped[str] = mapped_column(String(20), default="all", server_default="all")
    batch_size: Mapped[int | None] = mapped_column(Integer)
    canary_size: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    canary_pause: Mapped[float | None] = mapped_column(Float)
    # a request while another release holds the environment: one of vocabulary.ON_BUSY
    on_busy: Mapped[str] = mapped_column(String(10), default="queue", server_default="queue")

    project: Mapped[Project] = relationship(back_populates="environments")
    members: Mapped[list[EnvironmentHost]] = relationship(
        order_by="EnvironmentHost.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )


class EnvironmentHost(Base):
    __tablename__ = "environment_hosts"

    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[int] = mapped_column(
        ForeignKey("hosts.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)

    host: Mapped[Host] = relationship(lazy="joined")


class ApiToken(Base):
    """A bearer token for the API, the portal and the WebSocket feed; only its sha256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(sql_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Webhook(Base):
    """An outgoing webhook (see ``ferry.domain.webhooks``); its secret is a Fernet token, never plaintext."""

    __tablename__ = "webhooks"
    __table_args__ = (CheckConstraint(sql_in("kind", WEBHOOK_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(MAX_WEBHOOK_URL))
    kind: Mapped[str] = mapped_column(String(20))
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    project: Mapped[str | None] = mapped_column(String(100))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One webhook's delivery of one event (stream ``seq``): its attempts and outcome."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (CheckConstraint(sql_in("status", DELIVERY_STATUSES), name="status"),)

    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    release_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- release read model (a projection of the event stream) ------------------------
class Release(Base):
    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    environment: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str] = mapped_column(String(255))
    commit: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    requested_by: Mapped[str] = mapped_column(String(255))
    artifact_digest: Mapped[str | None] = mapped_column(String(128))
    artifact_size: Mapped[int | None] = mapped_column(BigInteger)
    artifact_reused: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_version: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(BigInteger)

    # Declared so the unit of work inserts a release before its hosts and steps.
    host_rows: Mapped[list[ReleaseHost]] = relationship(
        order_by="ReleaseHost.position", cascade="all, delete-orphan", passive_deletes=True
    )
    step_rows: Mapped[list[HostStep]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class ReleaseHost(Base):
    __tablename__ = "release_hosts"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the release plan
    status: Mapped[str] = mapped_column(String(20))
    failure: Mapped[str | None] = mapped_column(Text)
    activated: Mapped[bool] = mapped_column(Boolean, default=False)
    previous_release: Mapped[str | None] = mapped_column(String(64))
    # a rollback that switched to a directory the host held: that release's id (else None)
    release_dir: Mapped[str | None] = mapped_column(String(64))


class HostStep(Base):
    __tablename__ = "host_steps"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    output_tail: Mapped[str] = mapped_column(Text, default="")


class ProjectionPosition(Base):
    __tablename__ = "projection_position"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


PROJECTED_TABLES: tuple[type[Base], ...] = (HostStep, ReleaseHost, Release)
"""Tables owned by the release projection, children first (delete order)."""
