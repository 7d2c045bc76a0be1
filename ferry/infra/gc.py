"""Garbage collection of the object store: artifacts no kept release needs any more.

The artifacts of kept releases stay (``ferry.db.kept``: unfinished, among a host's last
``keep_releases``, live, or a live release's predecessor); the artifact of any other release
goes, unless it is younger than the grace period (a build that stored its artifact but has not
recorded it yet), an unfinished release uses it by the time of the delete, or a release of one
of the projects that used it is being built (its builder may be reusing it: the next pass
decides).

Objects that are no release's artifact (the step and build logs the events point to) are not
collected here: history — events and logs — is kept unless ``ferry.infra.retention`` is set up
to move old history to an archive, which the same pass runs after the artifacts.

The gateway runs a pass every ``FERRY_GC_INTERVAL`` seconds (``loop``, supervised) and on
``POST /api/gc`` (admin, ``ferry gc``), and logs each with its counts and the bytes it freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.kept import kept_releases
from ferry.db.models import Release
from ferry.domain.errors import StoreUnavailable
from ferry.domain.release import TERMINAL
from ferry.infra import retention
from ferry.infra.artifacts import ArtifactStore
from ferry.infra.bus import Bus
from ferry.infra.settings import Settings

log = logging.getLogger("ferry.infra.gc")


@dataclass(frozen=True)
class GcSettings:
    interval: float = 3600.0
    """``FERRY_GC_INTERVAL``: seconds between the gateway's passes (0: only on demand)."""
    grace: float = 3600.0
    """``FERRY_GC_GRACE``: objects younger than this (seconds) are never collected."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GcSettings:
        settings = settings or Settings.from_env()
        return cls(interval=settings.gc_interval, grace=settings.gc_grace)


@dataclass
class GcReport:
    """What one pass did."""

    kept_releases: int = 0
    kept_artifacts: int = 0
    objects: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    spared_young: int = 0
    spared_building: int = 0
    duration: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "kept_releases": self.kept_releases,
            "kept_artifacts": self.kept_artifacts,
            "objects": self.objects,
            "removed": len(self.removed),
            "removed_digests": sorted(self.removed),
            "bytes_freed": self.bytes_freed,
            "spared_young": self.spared_young,
            "spared_building": self.spared_building,
            "duration": round(self.duration, 3),
        }


@dataclass(frozen=True)
class Digests:
    kept: frozenset[str]
    """Artifacts of kept releases."""
    known: frozenset[str]
    """Artifacts of any release in the read model."""
    releases: int
    projects: dict[str, frozenset[str]]
    """The projects whose releases used each artifact."""


def artifact_digests(session: Session) -> Digests:
    kept_ids = kept_releases(session)
    kept: set[str] = set()
    projects: dict[str, set[str]] = {}
    for release_id, digest, project in session.execute(
        select(Release.id, Release.artifact_digest, Release.project).where(
            Release.artifact_digest.is_not(None)
        )
    ):
        if not digest:
            continue
        projects.setdefault(digest, set()).add(project)
        if release_id in kept_ids:
            kept.add(digest)
    return Digests(
        frozenset(kept),
        frozenset(projects),
        len(kept_ids),
        {d: frozenset(p) for d, p in projects.items()},
    )


def _unfinished(session: Session) -> tuple[set[str], set[str]]:
    """Artifacts of unfinished releases, and the projects with a release whose artifact is not
    recorded yet (its builder may be reusing an older artifact of the same project right now;
    one awaiting approval has not started, and its build checks that an artifact exists)."""
    rows = session.execute(
        select(Release.artifact_digest, Release.project, Release.status).where(
            Release.status.not_in(TERMINAL)
        )
    ).all()
    return {d for d, _, _ in rows if d}, {
        p for d, p, status in rows if not d and status != "awaiting_approval"
    }


def _age(mtime: str | None, now: datetime) -> float:
    if not mtime:
        return float("inf")
    try:
        at = datetime.fromisoformat(mtime.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (now - at).total_seconds()


async def _objects(store: ArtifactStore) -> list[tuple[str, int, str | None]]:
    try:
        infos = await store.os.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    return [(i.name, int(i.size or 0), i.mtime) for i in infos if i.name and not i.deleted]


async def collect(store: ArtifactStore, sessions: sessionmaker[Session], *, grace: float) -> GcReport:
    """One pass: delete every artifact that no kept release needs; a report of what it did."""
    started = time.monotonic()
    report = GcReport()

    def read() -> Digests:
        with sessions() as session:
            return artifact_digests(session)

    digests = await asyncio.to_thread(read)
    report.kept_releases, report.kept_artifacts = digests.releases, len(digests.kept)
    objects = await _objects(store)
    report.objects = len(objects)
    now = datetime.now(UTC)
    candidates = []
    for name, size, mtime in objects:
        if name in digests.kept or name not in digests.known:
            continue  # kept, or not an artifact at all (a log the history points to)
        if _age(mtime, now) < grace:
            report.spared_young += 1
            continue
        candidates.append((name, size))
    if candidates:
        # a release requested since the read above may have reused one of these artifacts

        def unfinished() -> tuple[set[str], set[str]]:
            with sessions() as session:
                return _unfinished(session)

        busy, building = await asyncio.to_thread(unfinished)
        for name, size in candidates:
            if name in busy:
                continue
            if digests.projects.get(name, frozenset()) & building:
                report.spared_building += 1  # collected by a pass after that build
                continue
            try:
                await store.os.delete(name)
            except (nats.js.errors.NotFoundError, nats.js.errors.BadObjectMetaError):
                continue  # another gateway's pass took it first
            report.removed.append(name)
            report.bytes_freed += size
    report.duration = time.monotonic() - started
    log.info("gc pass", extra={k: v for k, v in report.as_dict().items() if k != "removed_digests"})
    return report


async def run_pass(
    bus: Bus, sessions: sessionmaker[Session], settings: GcSettings | None = None
) -> dict[str, Any]:
    """One whole pass: the artifacts, then old history to the archive (``ferry.infra.retention``)."""
    settings = settings or GcSettings.from_settings()
    report = await collect(bus.artifacts, sessions, grace=settings.grace)
    history = await retention.archive_pass(bus, sessions, retention.RetentionSettings.from_settings())
    return {**report.as_dict(), **history.as_dict()}


async def loop(
    bus: Bus, sessions: sessionmaker[Session], stop: asyncio.Event, settings: GcSettings | None = None
) -> None:
    """Run a pass every ``interval`` seconds until ``stop`` (run it under ``worker.supervise``)."""
    settings = settings or GcSettings.from_settings()
    if settings.interval <= 0:
        await stop.wait()
        return
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), settings.interval)
            return
        except TimeoutError:
            pass
        try:
            await run_pass(bus, sessions, settings)
        except (nats.errors.Error, OSError, StoreUnavailable) as exc:  # NATS away: the next pass tries again
            log.warning("gc pass skipped", extra={"error": repr(exc)})
