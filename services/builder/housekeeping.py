"""The builder's disk: build directories a killed builder left, and mirrors nobody needs any more.

Every ``FERRY_BUILDER_GC_INTERVAL`` seconds (default an hour; 0: never): build directories older
than ``FERRY_BUILDER_WORK_MAX_AGE`` (default a day) go, and so do mirrors not fetched for
``FERRY_MIRROR_MAX_AGE_DAYS`` (default 30) whose repository URL no project has any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.models import Project
from ferry.infra.settings import Settings

from .mirror import MirrorCache
from .package import sweep_workdirs

log = logging.getLogger("ferry.builder.gc")
DAY = 86400.0


def project_urls(sessions: sessionmaker[Session]) -> set[str]:
    """Every project's repository URL: their mirrors stay, however long since their last build."""
    with sessions() as session:
        return set(session.scalars(select(Project.repo_url)))


def sweep(
    mirrors: MirrorCache, workdir: Path, live_urls: Collection[str], *, work_age: float, mirror_age: float
) -> tuple[list[Path], list[Path]]:
    """One pass; the build directories and mirrors removed."""
    work = sweep_workdirs(workdir, older_than=work_age)
    gone = mirrors.collect(live_urls, older_than=mirror_age)
    freed = [*work, *gone]
    log.info(
        "builder gc pass",
        extra={"workdirs_removed": len(work), "mirrors_removed": len(gone), "paths": [p.name for p in freed]},
    )
    return work, gone


async def loop(
    mirrors: MirrorCache, workdir: Path, live_urls: Callable[[], Collection[str]], stop: asyncio.Event
) -> None:
    """Sweep at start, then every interval, until ``stop`` (run it under ``worker.supervise``)."""
    settings = Settings.from_env()
    every, work_age = settings.builder_gc_interval, settings.builder_work_max_age
    mirror_age = settings.mirror_max_age_days * DAY
    if every <= 0:
        await stop.wait()
        return
    while not stop.is_set():
        urls = await asyncio.to_thread(live_urls)
        await asyncio.to_thread(sweep, mirrors, workdir, urls, work_age=work_age, mirror_age=mirror_age)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
