"""Wires the builder: NATS, the mirror cache, the build cache, credentials; then consumes build work."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from pathlib import Path

from ferry.infra import metrics, subjects, tracing
from ferry.infra.bus import open_bus
from ferry.infra.credentials import CredentialReader
from ferry.infra.settings import Settings
from ferry.infra.worker import run_consumer, serve_health, supervise
from services.builder import housekeeping
from services.builder.mirror import MirrorCache
from services.builder.sandbox import Sandbox
from services.builder.worker import BuilderDeps, build, list_refs, open_builds_kv


async def main(settings: Settings, stop: asyncio.Event) -> None:
    tracing.setup("builder", traces_dir=settings.traces_dir)
    metrics.serve(settings.builder_metrics_port, settings.metrics_host, "builder")
    async with contextlib.AsyncExitStack() as stack:
        bus = await open_bus(settings.nats, name="ferry-builder")
        stack.push_async_callback(bus.close)
        creds = CredentialReader(settings)
        stack.callback(creds.close)
        root = settings.home / "builder"
        sandbox = Sandbox.from_settings(settings, hidden=_hidden_paths(settings))
        problem = sandbox.problem()
        if problem is not None:  # builds without hooks still work; builds with hooks fail saying this
            logging.getLogger("ferry.builder").error("build hooks cannot run: %s", problem)
        sandbox.warn_if_off()
        (root / "work").mkdir(parents=True, exist_ok=True)
        deps = BuilderDeps(
            bus=bus,
            mirrors=MirrorCache(root / "mirrors"),
            builds=await open_builds_kv(bus),
            workdir=root / "work",
            secret=creds.secret,
            name=f"builder-{os.getpid()}",
            sandbox=sandbox,
            variables=creds.variables,
        )
        await serve_health(bus.nc, "builder", lambda: {"pid": os.getpid()})
        await bus.nc.subscribe(
            subjects.BUILDER_REFS,
            queue=subjects.BUILDER_REFS_QUEUE,
            cb=functools.partial(list_refs, deps=deps),
        )
        disk = supervise(
            "builder gc",
            lambda: housekeeping.loop(
                deps.mirrors, deps.workdir, lambda: housekeeping.project_urls(creds.sessions), stop
            ),
            stop,
        )
        work = supervise(
            "builder work",
            lambda: run_consumer(
                bus.js,
                subjects.WORK_STREAM,
                subjects.BUILDER,
                subjects.BUILD_WORK,
                functools.partial(build, deps=deps),
                stop,
                concurrency=2,
                ack_wait=settings.work_ack_wait,
            ),
            stop,
        )
        await asyncio.gather(work, disk)


def _hidden_paths(settings: Settings) -> tuple[Path, ...]:
    """What build hooks must never see, even if an operator binds a directory that holds it."""
    paths = [settings.home]
    if settings.db_url.startswith("sqlite:///"):
        paths.append(Path(settings.db_url.removeprefix("sqlite:///")))
    for name in ("credentials_dir", "signing_key_path"):  # NATS credentials, the work-signing key
        path = getattr(settings, name, None)
        if isinstance(path, Path):
            paths.append(path)
    return tuple(paths)
