"""Retention of history: old releases' events and logs move to an archive, never silently away.

By default nothing is ever dropped: the event stream and the step and build logs grow with the
history. With ``FERRY_HISTORY_RETENTION_DAYS`` > 0 **and** ``FERRY_HISTORY_ARCHIVE_DIR`` set,
each garbage-collection pass moves out the releases that ended more than that many days ago
and are not kept (``ferry.infra.gc.kept_releases``: unfinished, among a host's last
``keep_releases``, live, or a live release's predecessor):

1. its events (every message of its subjects, both layouts, with subject, sequence and headers)
   and the log objects they point to are written to ``<dir>/<release>.jsonl.gz`` (and
   ``<dir>/logs/<digest>``), flushed to disk, then renamed into place;
2. only then are its subjects purged from ``FERRY_EVENTS`` and its logs deleted from the object
   store — a log another retained release also points to stays.

The read model keeps the release's row (lists and fleet state are unchanged); its events and
logs are read from the archive from then on. Retention set without an archive directory is
refused (logged each pass, nothing removed). A stream with its own limits (``max_age``,
``max_msgs``, ``max_bytes``) would let JetStream drop history silently, kept releases' included:
each pass says so in the log.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.kept import kept_releases
from ferry.db.models import Release
from ferry.domain.errors import ArtifactNotFound
from ferry.domain.release import TERMINAL
from ferry.infra import directget
from ferry.infra.bus import Bus
from ferry.infra.settings import Settings
from ferry.infra.subjects import legacy_subject, release_filter

log = logging.getLogger("ferry.infra.retention")
BATCH = 100
"""Releases archived per pass at most (the next pass goes on)."""


@dataclass(frozen=True)
class RetentionSettings:
    days: float = 0.0
    """``FERRY_HISTORY_RETENTION_DAYS``: archive history older than this (0: keep everything)."""
    archive: Path | None = None
    """``FERRY_HISTORY_ARCHIVE_DIR``: where archived history goes (required with ``days``)."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetentionSettings:
        settings = settings or Settings.from_env()
        return cls(settings.history_retention_days, settings.history_archive_dir)


@dataclass
class RetentionReport:
    archived: list[str] = field(default_factory=list)
    events: int = 0
    logs_archived: int = 0
    logs_removed: int = 0
    bytes_freed: int = 0
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "archived_releases": len(self.archived),
            "archived_events": self.events,
            "logs_archived": self.logs_archived,
            "logs_removed": self.logs_removed,
            "log_bytes_freed": self.bytes_freed,
            "refused": self.refused,
        }


def _log_digests(payloads: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for p in payloads:
        digest = p.get("log_digest")
        if digest is None and isinstance(p.get("detail"), dict):
            digest = p["detail"].get("log_digest")
        if isinstance(digest, str) and digest:
            found.add(digest)
    return found


def candidates(session: Session, older_than: datetime) -> tuple[list[str], list[str]]:
    """(releases old enough to archive, oldest first; releases that stay and may share their logs)."""
    kept = kept_releases(session)
    ended = session.execute(
        select(Release.id, Release.finished_at, Release.status).order_by(Release.finished_at, Release.id)
    ).all()
    old, staying = [], []
    for release_id, finished, status in ended:
        if status in TERMINAL and finished is not None and finished < older_than and release_id not in kept:
            old.append(release_id)
        else:
            staying.append(release_id)
    return old, staying


async def _messages(bus: Bus, release_id: str) -> list[dict[str, Any]]:
    out = []
    for subject in (legacy_subject(release_id), release_filter(release_id)):
        async for msg in directget.messages(bus.nc, bus.events.stream, subject, 1, 256, what="event store"):
            headers = dict(msg.headers or {})
            out.append(
                {
                    "seq": int(headers.pop("Nats-Sequence")),
                    "subject": headers.pop("Nats-Subject", subject),
                    "headers": {k: v for k, v in headers.items() if not k.startswith("Nats-Time")},
                    "data": base64.b64encode(msg.data).decode(),
                }
            )
    return sorted(out, key=lambda m: m["seq"])


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
            for record in records:
                gz.write((json.dumps(record) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    part.replace(path)


async def _references(bus: Bus, release_ids: list[str]) -> set[str]:
    """Log digests the given releases' events point to."""
    found: set[str] = set()
    for release_id in release_ids:
        for stored in await bus.events.load(release_id):
            found |= _log_digests([stored.event.model_dump(mode="json")])
    return found


async def archive_pass(
    bus: Bus, sessions: sessionmaker[Session], settings: RetentionSettings, *, now: datetime | None = None
) -> RetentionReport:
    """One pass (see the module's docstring)."""
    report = RetentionReport()
    info = await bus.js.stream_info(bus.events.stream)
    limits = {k: getattr(info.config, k, None) for k in ("max_age", "max_msgs", "max_bytes")}
    if any(v not in (None, 0, -1) for v in limits.values()):
        log.error(
            "the event stream has limits of its own: JetStream drops history silently, kept releases' too",
            extra={"stream": bus.events.stream, **{k: v for k, v in limits.items() if v}},
        )
    if settings.days <= 0:
        return report
    if settings.archive is None:
        report.refused = (
            "FERRY_HISTORY_RETENTION_DAYS is set without FERRY_HISTORY_ARCHIVE_DIR: nothing removed"
        )
        log.error(report.refused)
        return report
    older_than = (now or datetime.now(UTC)) - timedelta(days=settings.days)

    archive: Path = settings.archive

    def pending() -> tuple[list[str], list[str]]:
        (archive / "logs").mkdir(parents=True, exist_ok=True)
        with sessions() as session:
            old, staying = candidates(session, older_than)
        # an archived release keeps its row in the read model: its archive file says it is done
        todo = [r for r in old if not (archive / f"{r}.jsonl.gz").exists()]
        return todo[:BATCH], staying

    old, staying = await asyncio.to_thread(pending)
    if not old:
        return report
    logs: dict[str, set[str]] = {}
    for release_id in old:
        records = await _messages(bus, release_id)
        payloads = [json.loads(base64.b64decode(r["data"])) for r in records]
        digests = _log_digests(payloads)
        for digest in digests:
            target = archive / "logs" / digest
            if not await asyncio.to_thread(target.exists):
                try:
                    await bus.artifacts.get_file(digest, target)
                    report.logs_archived += 1
                except ArtifactNotFound:
                    pass  # never stored (a crash before), or archived by an earlier pass
        await asyncio.to_thread(_write, archive / f"{release_id}.jsonl.gz", records)
        # written and on disk: only now does the stream let go of it
        for subject in (legacy_subject(release_id), release_filter(release_id)):
            await bus.js.purge_stream(bus.events.stream, subject=subject)
        report.archived.append(release_id)
        report.events += len(records)
        logs[release_id] = digests
    wanted = await _references(bus, staying) if any(logs.values()) else set()
    for digest in set().union(*logs.values()) - wanted:
        size = await bus.artifacts.exists(digest)
        if size is None:
            continue
        await bus.artifacts.os.delete(digest)
        report.logs_removed += 1
        report.bytes_freed += size
    log.info("history archived", extra=report.as_dict())
    return report
