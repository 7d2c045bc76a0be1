"""Release events: frozen, explicitly typed on the wire, versioned.

Every event carries the release id, its per-release version (1-based), the UTC
time and a schema version. The wire ``type`` is a stable string, never a Python
path, so refactoring never breaks stored history. Changing an event means a new
``schema_version`` plus an upcaster in ``UPCASTERS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from ferry.domain.vocabulary import ArtifactFormat as ArtifactFormat
from ferry.domain.vocabulary import Strategy as Strategy

HOST_STEPS: tuple[str, ...] = (
    "upload",
    "link",
    "pre_release",
    "activate",
    "restart",
    "health",
    "post_release",
)
"""The per-host steps of a release, in the order they must run."""

TAIL_LIMIT = 4096


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def tail(text: str, limit: int = TAIL_LIMIT) -> str:
    """The last ``limit`` characters of an output, marked when cut."""
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- the release plan: a snapshot of configuration taken at request time ---
class HealthCheck(_Frozen):
    kind: Literal["none", "command", "http"] = "none"
    target: str = ""
    timeout: float = 5.0
    retries: int = 5
    interval: float = 1.0


class Recipe(_Frozen):
    """How to build and install a project (no secrets: credentials by name only)."""

    repo_url: str
    repo_credential: str | None = None
    build_hooks: tuple[str, ...] = ()
    hook_timeout: float = 600.0
    hook_network: bool = True  # False: build hooks run without network (a namespace of their own)
    excludes: tuple[str, ...] = ()
    artifact_format: ArtifactFormat = "zst"
    deploy_path: str
    shared_files: tuple[str, ...] = ()
    shared_dirs: tuple[str, ...] = ()
    keep_releases: int = 5
    pre_release: str | None = None
    post_release: str | None = None
    restart: str | None = None
    health: HealthCheck = HealthCheck()


class Plan(_Frozen):
    """What to release where, and how: ``strategy`` "all" keeps up to ``concurrency`` hosts in
    flight; "rolling" releases ``batch_size`` hosts at a time (default: ``concurrency``), each
    batch finishing before the next starts; "canary" releases the first ``canary_size`` hosts,
    pauses (until resumed, or for ``canary_pause`` seconds), then the rest as "all" (or in
    batches when ``batch_size`` is set). ``concurrency`` caps hosts in flight inside a batch too."""

    recipe: Recipe
    hosts: tuple[str, ...]
    concurrency: int = 1
    max_failures: int = 0
    require_approval: bool = False
    allow_self_approval: bool = False
    """Four-eyes off: the requester may approve their own release."""
    rollback_on_failure: bool = True
    strategy: Strategy = "all"
    batch_size: int | None = Field(default=None, ge=1)
    canary_size: int = Field(default=1, ge=1)
    canary_pause: float | None = Field(default=None, ge=0)
    restores: str | None = None
    """A rollback: the release whose directory it restores. A host that still holds that
    directory with the same artifact switches to it at once (no bytes, no extraction, no
    hooks): switch, restart, health check."""

    @field_validator("hosts")
    @classmethod
    def _unique_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(hosts)) != len(hosts):
            raise ValueError("hosts must be unique")
        return hosts


# --- events -----------------------------------------------------------------
class Event(_Frozen):
    TERMINAL: ClassVar[bool] = False

    type: str
    schema_version: int = 1
    release_id: str
    version: int = Field(ge=1)
    at: AwareDatetime

    @field_validator("at")
    @classmethod
    def _utc(cls, at: datetime) -> datetime:
        return at.astimezone(UTC)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ReleaseRequested(Event):
    type: Literal["release.requested"] = "release.requested"
    schema_version: int = 3  # v2: the plan's rollout strategy; v3: the gateway's signature
    project: str
    environment: str
    ref: str
    requested_by: str
    plan: Plan
    signature: str | None = None
    """Ed25519 over the request and its plan by the gateway's key (``ferry.infra.signing``); builder and
    agents refuse a release without a valid one."""


class ReleaseApproved(Event):
    type: Literal["release.approved"] = "release.approved"
    by: str


class ReleaseRejected(Event):
    TERMINAL: ClassVar[bool] = True
    type: Literal["release.rejected"] = "release.rejected"
    by: str
    reason: str = ""


class BuildStarted(Event):
    type: Literal["build.started"] = "build.started"
    builder: str = ""


class SourceFetched(Event):
    type: Literal["build.source_fetched"] = "build.source_fetched"
    commit: str
    duration: float = 0.0


class BuildHookFinished(Event):
    type: Literal["build.hook_finished"] = "build.hook_finished"
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str = ""


class ArtifactPackaged(Event):
    type: Literal["build.artifact_packaged"] = "build.artifact_packaged"
    digest: str
    size: int
    format: ArtifactFormat
    reused: bool = False
    log_digest: str | None = None
    duration: float = 0.0


class BuildFailed(Event):
    TERMINAL: ClassVar[bool] = True
    type: Literal["build.failed"] = "build.failed"
    stage: Literal["fetch", "hooks", "package"]
    reason: str
    output_tail: str = ""
    log_digest: str | None = None


class HostStepStarted(Event):
    type: Literal["host.step_started"] = "host.step_started"
    host: str
    step: str
    agent: str = ""


class HostStepFinished(Event):
    type: Literal["host.step_finished"] = "host.step_finished"
    host: str
    step: str
    exit_code: int
    duration: float
    output_tail: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class HostFailed(Event):
    type: Literal["host.failed"] = "host.failed"
    host: str
    step: str
    reason: str
    code: str = "STEP_FAILED"


class HostRolledBack(Event):
    type: Literal["host.rolled_back"] = "host.rolled_back"
    schema_version: int = 2  # v2: whether the restored release passed its health check
    host: str
    to_release: str | None
    output_tail: str = ""
    healthy: bool | None = None
    """The restored release's health check: None when none ran (no check configured, or v1)."""


class ReleasePaused(Event):
    """The canary batch is done; the rollout waits for a resume (or until ``resume_at``)."""

    type: Literal["release.paused"] = "release.paused"
    hosts_done: tuple[str, ...]
    resume_at: AwareDatetime | None = None
    reason: str = ""

    @field_validator("resume_at")
    @classmethod
    def _utc_resume(cls, at: datetime | None) -> datetime | None:
        return None if at is None else at.astimezone(UTC)


class ReleaseResumed(Event):
    type: Literal["release.resumed"] = "release.resumed"
    by: str  # a user, or "timer" when the pause ran out


class ReleaseCancelRequested(Event):
    """Cancel of a paused release: roll back the hosts it switched, then ``release.cancelled``."""

    type: Literal["release.cancel_requested"] = "release.cancel_requested"
    by: str
    reason: str = ""


class ReleaseSucceeded(Event):
    TERMINAL: ClassVar[bool] = True
    type: Literal["release.succeeded"] = "release.succeeded"


class ReleaseFailed(Event):
    TERMINAL: ClassVar[bool] = True
    type: Literal["release.failed"] = "release.failed"
    reason: str


class ReleaseCancelled(Event):
    TERMINAL: ClassVar[bool] = True
    type: Literal["release.cancelled"] = "release.cancelled"
    by: str
    reason: str = ""


HOST_EVENT_TYPES: tuple[type[Event], ...] = (HostStepStarted, HostStepFinished, HostFailed, HostRolledBack)
"""Events about one host: they live on the host's own subject, numbered by the host's own version."""


def host_of(event: Event) -> str | None:
    """The host a host event is about, or None for a release-level event."""
    if isinstance(event, HostStepStarted | HostStepFinished | HostFailed | HostRolledBack):
        return event.host
    return None


EVENT_TYPES: tuple[type[Event], ...] = (
    ReleaseRequested,
    ReleaseApproved,
    ReleaseRejected,
    BuildStarted,
    SourceFetched,
    BuildHookFinished,
    ArtifactPackaged,
    BuildFailed,
    HostStepStarted,
    HostStepFinished,
    HostFailed,
    HostRolledBack,
    ReleasePaused,
    ReleaseResumed,
    ReleaseCancelRequested,
    ReleaseSucceeded,
    ReleaseFailed,
    ReleaseCancelled,
)

AnyEvent = Annotated[
    ReleaseRequested
    | ReleaseApproved
    | ReleaseRejected
    | BuildStarted
    | SourceFetched
    | BuildHookFinished
    | ArtifactPackaged
    | BuildFailed
    | HostStepStarted
    | HostStepFinished
    | HostFailed
    | HostRolledBack
    | ReleasePaused
    | ReleaseResumed
    | ReleaseCancelRequested
    | ReleaseSucceeded
    | ReleaseFailed
    | ReleaseCancelled,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)


def _requested_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """release.requested v1 -> v2: plans before rollout strategies released all at once."""
    plan = dict(payload.get("plan") or {})
    plan.setdefault("strategy", "all")
    plan.setdefault("batch_size", None)
    plan.setdefault("canary_size", 1)
    plan.setdefault("canary_pause", None)
    return {**payload, "plan": plan, "schema_version": 2}


def _requested_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """release.requested v2 -> v3: requests before signed plans carry no signature (refused by
    builder and agents: request such a release again)."""
    return {**payload, "signature": None, "schema_version": 3}


def _rolled_back_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """host.rolled_back v1 -> v2: rollbacks before the health check say nothing about it."""
    return {**payload, "healthy": None, "schema_version": 2}


# (type, from schema_version) -> function lifting a payload one version up.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("release.requested", 1): _requested_v1,
    ("host.rolled_back", 1): _rolled_back_v1,
    ("release.requested", 2): _requested_v2,
}

TYPE_NAMES: frozenset[str] = frozenset(t.model_fields["type"].default for t in EVENT_TYPES)
_CURRENT_VERSIONS: dict[str, int] = {
    t.model_fields["type"].default: t.model_fields["schema_version"].default for t in EVENT_TYPES
}


class UnknownEvent(ValueError):
    """A payload whose type this version of ferry does not know."""


def upcast(payload: dict[str, Any]) -> dict[str, Any]:
    """Lift an old payload to the current schema version of its type."""
    while (fn := UPCASTERS.get((payload.get("type", ""), payload.get("schema_version", 1)))) is not None:
        payload = fn(payload)
    return payload


def encode(event: Event) -> bytes:
    """The event's JSON wire form."""
    return event.to_json()


def decode(data: bytes | str | dict[str, Any]) -> Event:
    """Parse and validate an event from its wire form (upcasting older versions)."""
    payload = json.loads(data) if isinstance(data, bytes | str) else dict(data)
    if not isinstance(payload, dict):
        raise UnknownEvent("event payload is not an object")
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in TYPE_NAMES:
        raise UnknownEvent(f"unknown event type {kind!r}")
    payload = upcast(payload)
    known = _CURRENT_VERSIONS[kind]
    if payload.get("schema_version", 1) > known:
        raise UnknownEvent(f"{kind} schema version {payload.get('schema_version')} is newer than {known}")
    return _ADAPTER.validate_python(payload)
