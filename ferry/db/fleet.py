"""What every host of an environment runs, according to the release history (the read model).

For each host, the newest release that switched it decides: the release itself, or — when that
release rolled the host back — the release it went back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.models import Release, ReleaseHost


@dataclass(frozen=True)
class HostRecord:
    host: str
    release: str | None
    """The release directory ``current`` should point at (None: ferry never switched it)."""
    by_release: str | None
    """The release that last switched the host (its own id, or the one that rolled it back)."""
    at: datetime | None
    status: str | None
    """That release's status."""


def host_records(
    session: Session, project: str, environment: str, hosts: tuple[str, ...]
) -> list[HostRecord]:
    """One record per host in ``hosts`` order."""
    rows = session.execute(
        select(ReleaseHost, Release.requested_at, Release.status)
        .join(Release, Release.id == ReleaseHost.release_id)
        .where(
            Release.project == project,
            Release.environment == environment,
            ReleaseHost.host.in_(hosts),
            ReleaseHost.activated.is_(True),
        )
        .order_by(Release.requested_at.desc(), Release.id.desc())
    ).all()
    newest: dict[str, tuple[ReleaseHost, datetime, str]] = {}
    for row, at, status in rows:
        newest.setdefault(row.host, (row, at, status))
    out = []
    for name in hosts:
        found = newest.get(name)
        if found is None:
            out.append(HostRecord(name, None, None, None, None))
            continue
        row, at, status = found
        # rolled back: the release it went back to (none recorded: it could not go back)
        own = row.release_dir or row.release_id  # an instant rollback runs the directory it kept
        live = (row.previous_release or own) if row.status == "rolled_back" else own
        out.append(HostRecord(name, live, row.release_id, at, status))
    return out
