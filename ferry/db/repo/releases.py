"""Releases: the read model the projector writes, as plain views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ferry.db.models import (
    HostStep,
    ProjectionPosition,
    Release,
    ReleaseHost,
)
from ferry.domain.errors import NotFound
from ferry.domain.events import HOST_STEPS

from ._common import _int_range


@dataclass(frozen=True)
class HostStepView:
    step: str
    status: str
    exit_code: int | None
    started_at: datetime
    duration: float | None
    output_tail: str


@dataclass(frozen=True)
class ReleaseHostView:
    host: str
    status: str
    failure: str | None
    activated: bool
    previous_release: str | None
    steps: tuple[HostStepView, ...]


@dataclass(frozen=True)
class ReleaseSummary:
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: str
    requested_by: str
    artifact_digest: str | None
    artifact_size: int | None
    artifact_reused: bool | None
    reason: str | None
    requested_at: datetime
    finished_at: datetime | None
    last_version: int
    last_seq: int


@dataclass(frozen=True)
class ReleaseView(ReleaseSummary):
    hosts: tuple[ReleaseHostView, ...]


def _summary_fields(r: Release) -> dict[str, Any]:
    return {
        "id": r.id,
        "project": r.project,
        "environment": r.environment,
        "ref": r.ref,
        "commit": r.commit,
        "status": r.status,
        "requested_by": r.requested_by,
        "artifact_digest": r.artifact_digest,
        "artifact_size": r.artifact_size,
        "artifact_reused": r.artifact_reused,
        "reason": r.reason,
        "requested_at": r.requested_at,
        "finished_at": r.finished_at,
        "last_version": r.last_version,
        "last_seq": r.last_seq,
    }


_STEP_ORDER = {s: i for i, s in enumerate(HOST_STEPS)}


def get_release(session: Session, release_id: str) -> ReleaseView:
    """A release with its hosts (plan order) and their steps (run order)."""
    r = session.get(Release, release_id)
    if r is None:
        raise NotFound(f"no release {release_id!r}", field="release_id")
    hosts = session.scalars(
        select(ReleaseHost).where(ReleaseHost.release_id == release_id).order_by(ReleaseHost.position)
    ).all()
    steps: dict[str, list[HostStepView]] = {}
    for s in session.scalars(select(HostStep).where(HostStep.release_id == release_id)):
        steps.setdefault(s.host, []).append(
            HostStepView(s.step, s.status, s.exit_code, s.started_at, s.duration, s.output_tail)
        )
    return ReleaseView(
        **_summary_fields(r),
        hosts=tuple(
            ReleaseHostView(
                h.host,
                h.status,
                h.failure,
                h.activated,
                h.previous_release,
                tuple(sorted(steps.get(h.host, []), key=lambda v: _STEP_ORDER.get(v.step, len(_STEP_ORDER)))),
            )
            for h in hosts
        ),
    )


def list_releases(
    session: Session,
    project: str | None = None,
    environment: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ReleaseSummary]:
    """Releases newest first, optionally filtered."""
    _int_range(limit, "limit", 1, 1000)
    _int_range(offset, "offset", 0)
    query = select(Release)
    if project is not None:
        query = query.where(Release.project == project)
    if environment is not None:
        query = query.where(Release.environment == environment)
    if status is not None:
        query = query.where(Release.status == status)
    query = query.order_by(Release.requested_at.desc(), Release.id.desc()).limit(limit).offset(offset)
    return [ReleaseSummary(**_summary_fields(r)) for r in session.scalars(query)]


def count_releases(session: Session, project: str | None = None, status: str | None = None) -> int:
    query = select(func.count()).select_from(Release)
    if project is not None:
        query = query.where(Release.project == project)
    if status is not None:
        query = query.where(Release.status == status)
    return int(session.scalar(query) or 0)


def projection_position(session: Session, name: str = "releases") -> int:
    """The last stream sequence the named projection has applied (0 before any)."""
    return int(session.scalar(select(ProjectionPosition.seq).where(ProjectionPosition.name == name)) or 0)
