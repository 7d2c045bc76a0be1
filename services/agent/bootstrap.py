"""Wires an agent: NATS, credentials, the local artifact cache; then consumes host work.

Agents scale as a JetStream consumer group per agent group (``FERRY_AGENT_GROUP``): every agent
of a group binds the durable consumer ``agent-<group>`` on ``ferry.work.host.<group>.>``, so the
hosts of one release are shared among the agents of each host's group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ferry.domain.agentgroups import DEFAULT_GROUP
from ferry.infra import metrics, subjects, tracing
from ferry.infra.bus import open_bus
from ferry.infra.credentials import CredentialReader
from ferry.infra.settings import Settings
from ferry.infra.worker import Permanent, run_consumer, serve_health, supervise
from services.agent import cachesweep, doctor
from services.agent.deps import AgentDeps
from services.agent.ssh import SSHTarget
from services.agent.worker import HANDLERS

log = logging.getLogger("ferry.agent")


def work_filters(group: str) -> list[str]:
    """The subjects a group's consumer takes; the default group also drains work queued before groups."""
    legacy = list(subjects.LEGACY_HOST_WORK) if group == DEFAULT_GROUP else []
    return [subjects.group_work(group), *legacy]


async def drop_legacy_consumer(js: JetStreamContext) -> None:
    """Its filter overlaps every group's, which a work-queue stream refuses: remove it once."""
    try:
        await js.delete_consumer(subjects.WORK_STREAM, subjects.LEGACY_AGENT)
    except nats.js.errors.NotFoundError:
        return
    log.info(
        "removed the consumer agents shared before agent groups", extra={"consumer": subjects.LEGACY_AGENT}
    )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    tracing.setup("agent", traces_dir=settings.traces_dir)
    metrics.serve(settings.agent_metrics_port, settings.metrics_host, "agent")
    async with contextlib.AsyncExitStack() as stack:
        # Every host step blocks a thread on SSH: the default executor (cores + 4 threads)
        # would cap the hosts in flight far below the environment's concurrency.
        threads = ThreadPoolExecutor(max_workers=settings.agent_concurrency + 4, thread_name_prefix="host")
        asyncio.get_running_loop().set_default_executor(threads)
        stack.callback(threads.shutdown, wait=False, cancel_futures=True)
        bus = await open_bus(settings.nats, name=f"ferry-{settings.agent_name}")
        stack.push_async_callback(bus.close)
        creds = CredentialReader(settings)
        stack.callback(creds.close)

        def target(name: str) -> SSHTarget:
            h = creds.host(name)
            return SSHTarget(
                name=h.name,
                address=h.address,
                port=h.port,
                user=h.user,
                private_key=h.private_key,
                password=h.password,
                host_key=h.host_key,
                trust_on_first_use=h.trust_on_first_use,
            )

        cache = settings.home / "agent-cache" / settings.agent_name
        cache.mkdir(parents=True, exist_ok=True)
        deps = AgentDeps(
            bus=bus,
            target=target,
            record_host_key=creds.record_host_key,
            cache_dir=cache,
            name=settings.agent_name,
            variables=creds.variables,
        )

        async def dispatch(msg: Msg) -> None:
            handler = HANDLERS.get(subjects.action_of(msg.subject))
            if handler is None:
                raise Permanent(f"no handler for {msg.subject}")
            await handler(msg, deps)

        group = settings.agent_group
        await drop_legacy_consumer(bus.js)
        await doctor.serve(deps, group)
        await serve_health(
            bus.nc, "agent", lambda: {"pid": os.getpid(), "name": settings.agent_name, "agent_group": group}
        )
        log.info("serving hosts of agent group", extra={"consumer": subjects.agent_consumer(group)})
        cached = supervise(
            "agent cache sweep",
            lambda: cachesweep.loop(cache, bus.artifacts, stop, settings.gc_interval),
            stop,
        )
        work = supervise(
            "agent work",
            lambda: run_consumer(
                bus.js,
                subjects.WORK_STREAM,
                subjects.agent_consumer(group),
                work_filters(group),
                dispatch,
                stop,
                concurrency=settings.agent_concurrency,
                ack_wait=settings.work_ack_wait,
            ),
            stop,
        )
        await asyncio.gather(work, cached)
