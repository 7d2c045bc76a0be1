"""Which releases are kept: their artifacts stay in the object store and on the hosts, their history
stays in the event stream (``ferry.infra.gc``, ``ferry.infra.retention``).

A release is kept while it is unfinished, or is among the last ``keep_releases`` releases that
switched some host of its environment (newest first), or is what a host runs now (a rollback's
target, an instant rollback's directory), or is the live release's predecessor (hosts keep that
one for a rollback: ``services/agent/remote.prune`` protects it too).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.models import Project, Release, ReleaseHost
from ferry.domain.events import Recipe
from ferry.domain.release import TERMINAL

DEFAULT_KEEP: int = Recipe.model_fields["keep_releases"].default


def _keep_of(config: object) -> int:
    value = config.get("keep_releases") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value >= 1 else DEFAULT_KEEP


def kept_releases(session: Session) -> set[str]:
    """Ids of the releases whose artifacts must stay (see the module's docstring)."""
    kept = set(session.scalars(select(Release.id).where(Release.status.not_in(TERMINAL))))
    keep_of = {
        name: _keep_of(config) for name, config in session.execute(select(Project.name, Project.config))
    }
    rows = session.execute(
        select(
            Release.project,
            Release.environment,
            ReleaseHost.host,
            ReleaseHost.release_id,
            ReleaseHost.status,
            ReleaseHost.previous_release,
            ReleaseHost.release_dir,
        )
        .join(Release, Release.id == ReleaseHost.release_id)
        .where(ReleaseHost.activated.is_(True))
        .order_by(Release.requested_at.desc(), Release.id.desc())
    )
    seen: dict[tuple[str, str, str], int] = {}
    for project, environment, host, release_id, status, previous, release_dir in rows:
        key = (project, environment, host)
        n = seen.get(key, 0)
        if n >= keep_of.get(project, DEFAULT_KEEP):
            continue
        seen[key] = n + 1
        kept.add(release_id)
        if release_dir:
            kept.add(release_dir)  # an instant rollback runs the directory it restored
        if previous and (n == 0 or status == "rolled_back"):
            kept.add(previous)  # the live one's predecessor, or where a rollback went back to
    return kept
