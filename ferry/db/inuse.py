"""Configuration a running release still needs is not deleted: a project, environment, host or
credential that an unfinished release (queued, awaiting approval, building, deploying, paused,
cancelling — as the read model says) uses is refused with 409 naming the releases."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ferry.db.models import Credential, Host, Project, Release, ReleaseHost
from ferry.domain.errors import Conflict
from ferry.domain.release import TERMINAL

SHOWN = 5


def unfinished_using(
    session: Session,
    *,
    project: str | None = None,
    environment: str | None = None,
    host: str | None = None,
    credential: str | None = None,
) -> list[str]:
    """Ids of unfinished releases that use the given configuration (oldest first)."""
    q = select(Release.id).where(Release.status.not_in(TERMINAL)).order_by(Release.requested_at)
    if project is not None:
        q = q.where(Release.project == project)
    if environment is not None:
        q = q.where(Release.environment == environment)
    if host is not None:
        q = q.where(Release.id.in_(select(ReleaseHost.release_id).where(ReleaseHost.host == host)))
    if credential is not None:
        hosts = (
            select(Host.name)
            .join(Credential, Host.credential_id == Credential.id)
            .where(Credential.name == credential)
        )
        projects = (
            select(Project.name)
            .join(Credential, Project.repo_credential_id == Credential.id)
            .where(Credential.name == credential)
        )
        q = q.where(
            or_(
                Release.id.in_(select(ReleaseHost.release_id).where(ReleaseHost.host.in_(hosts))),
                Release.project.in_(projects),
            )
        )
    return list(session.scalars(q))


def refuse_if_used(session: Session, what: str, field: str = "name", **uses: str) -> None:
    """Raise Conflict naming the unfinished releases that use ``what``."""
    running = unfinished_using(session, **uses)
    if running:
        shown = ", ".join(running[:SHOWN]) + (
            f" and {len(running) - SHOWN} more" if len(running) > SHOWN else ""
        )
        raise Conflict(
            f"{what} is used by unfinished release {shown}; wait for it to end or cancel it first",
            field=field,
        )
