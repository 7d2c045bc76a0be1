"""Drift checks: read where ``current`` points on hosts, change nothing.

The gateway asks ``ferry.doctor.<group>`` (request/reply, one queue group per agent group, so
one agent of the hosts' group answers) with a deploy path and host names; the answer maps each
host to the release its ``current`` names, or to the error that kept it from being read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg

from ferry.domain.errors import FerryError
from ferry.domain.work import DoctorReply, DoctorRequest, MalformedWork
from ferry.infra import subjects
from services.agent import remote
from services.agent.deps import AgentDeps, connect

log = logging.getLogger("ferry.agent")
PARALLEL = 16


async def live_releases(deps: AgentDeps, deploy_path: str, hosts: list[str]) -> dict[str, dict[str, Any]]:
    """Each host's ``current`` (read over SSH, nothing written)."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(host: str) -> tuple[str, dict[str, Any]]:
        async with gate:
            try:
                session = await connect(deps, host)
            except FerryError as exc:
                return host, {"current": None, "error": exc.message}
            try:
                live = await asyncio.to_thread(remote.current_release, session, deploy_path)
                return host, {"current": live, "error": None}
            except FerryError as exc:
                return host, {"current": None, "error": exc.message}
            finally:
                await asyncio.to_thread(session.close)

    return dict(await asyncio.gather(*(one(h) for h in hosts)))


async def serve(deps: AgentDeps, group: str) -> None:
    async def answer(msg: Msg) -> None:
        try:
            ask = DoctorRequest.parse(msg.data)
        except MalformedWork as exc:
            await msg.respond(DoctorReply(error=exc.message).canonical())
            return
        live = await live_releases(deps, ask.deploy_path, ask.hosts)
        await msg.respond(DoctorReply.model_validate({"hosts": live}).canonical())

    await deps.bus.nc.subscribe(subjects.doctor(group), queue=subjects.doctor_queue(group), cb=answer)
