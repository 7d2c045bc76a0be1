"""Wires an agent: NATS, credentials, the local artifact cache; then consumes host work.

Agents scale as a JetStream consumer group: every agent process binds the same durable
consumer, so the hosts of one release are shared among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from nats.aio.msg import Msg

from ferry.bus import WORK_PREFIX, WORK_STREAM, open_bus
from ferry.credentials import CredentialReader
from ferry.settings import Settings
from ferry.worker import run_consumer, serve_health, supervise
from services.agent.ssh import SSHTarget
from services.agent.worker import HANDLERS, AgentDeps

CONCURRENCY = int(os.environ.get("FERRY_AGENT_CONCURRENCY", "8"))


async def main(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
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
        )

        async def dispatch(msg: Msg) -> None:
            await HANDLERS[msg.subject](msg, deps)

        await serve_health(bus.nc, "agent", lambda: {"pid": os.getpid(), "name": settings.agent_name})
        await supervise(
            "agent work",
            lambda: run_consumer(
                bus.js,
                WORK_STREAM,
                "agent",
                f"{WORK_PREFIX}.host.>",
                dispatch,
                stop,
                concurrency=CONCURRENCY,
                ack_wait=float(os.environ.get("FERRY_WORK_ACK_WAIT", "60")),
            ),
            stop,
        )
