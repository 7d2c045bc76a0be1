"""The bodies of ``/api/releases``: a request, its actions, and the release as its events tell it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from ferry.domain.release import Status
from ferry.domain.vocabulary import ArtifactFormat
from services.gateway.api.bodies import Input, Output
from services.gateway.api.fields import GitRef, Reason, Slug

ReleaseStatus = Status  # the aggregate's statuses (ferry.domain.release), written once


class ReleaseIn(Input):
    project: Slug
    environment: Slug
    ref: GitRef = Field(description="branch, tag, full ref name or commit id")
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None, description="defaults to the caller (X-Ferry-User, until authentication lands)"
    )


class ReasonIn(Input):
    reason: Reason = ""


class ReleaseLinks(Output):
    self: str
    events: str


class ReleaseCreated(Output):
    id: str
    status: ReleaseStatus
    last_seq: int
    links: ReleaseLinks


class ArtifactOut(Output):
    digest: str
    size: int
    format: ArtifactFormat
    reused: bool


class HookOut(Output):
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str


class BuildOut(Output):
    status: Literal["waiting", "running", "succeeded", "failed", "cancelled"]
    hooks: list[HookOut]
    log_digest: str | None
    output_tail: str = ""


class StepOut(Output):
    step: str
    status: Literal["waiting", "running", "succeeded", "failed"]
    started_at: datetime | None
    duration: float | None
    exit_code: int | None
    output_tail: str
    log_digest: str | None = None


class ReleaseHostOut(Output):
    name: str
    status: Literal["waiting", "running", "succeeded", "failed", "rolled_back"]
    failure: str | None
    steps: list[StepOut]
    instant: str | None = Field(
        default=None,
        description="a rollback that switched at once to a directory the host held (its release id)",
    )


class PauseOut(Output):
    paused_at: datetime
    hosts_done: list[str]
    resume_at: datetime | None = Field(description="when the timer resumes it; null waits for a resume")
    resumed_by: str | None = Field(description='who resumed it ("timer" when the pause ran out)')


class ReleaseOut(Output):
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: ReleaseStatus
    requested_by: str
    requested_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    version: int = Field(description="the release's version: the number of its events")
    last_seq: int = Field(description="stream sequence of its last event; follow the WebSocket from here")
    artifact: ArtifactOut | None
    build: BuildOut
    hosts: list[ReleaseHostOut]
    links: ReleaseLinks
    pause: PauseOut | None = Field(default=None, description="the canary pause, once it happened")
    queue_position: int | None = Field(
        default=None,
        description="while queued behind another release of the environment: 1 is next in line",
    )


class StoredEventOut(Output):
    seq: int
    event: dict[str, Any] = Field(description="the event's wire JSON (see docs/events)")


class EventList(Output):
    events: list[StoredEventOut]


class ReleaseSummary(Output):
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: str
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None
    reason: str | None
    artifact_digest: str | None
    last_seq: int


class ReleaseList(Output):
    releases: list[ReleaseSummary]


class ReleaseQuery(Input):
    """Query parameters of ``GET /api/releases`` (strings on the wire, hence not strict)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    project: Slug | None = None
    environment: Slug | None = None
    status: ReleaseStatus | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
