"""Typed work against a real nats-server, as the gateway signs it and builder and agents verify it:
an item that is signed but not the shape of its kind is refused once (terminated, logged with the
field), never handed back in a redelivery loop; a well-formed one reaches the handler as a model."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from ferry.domain.work import BuildWork, DeployWork
from ferry.infra import subjects
from ferry.infra.bus import Bus, open_bus
from ferry.infra.natsauth import credential_path
from ferry.infra.settings import Settings
from ferry.infra.worker import run_consumer
from ferry.local.natsserver import NatsServer
from services.agent.bootstrap import work_filters
from services.agent.worker import HANDLERS
from services.builder.worker import build


async def _bus_as(server: NatsServer, identity: str, home: Path) -> Bus:
    settings = Settings(home=home, nats_creds=credential_path(server.credentials_dir, identity))
    return await open_bus(server.address, name=f"test-{identity}", settings=settings)


async def _drain(bus: Bus, durable: str, subject: str | list[str], handler: Any, expect: int) -> None:
    """Run the consumer until ``expect`` items were delivered and none is pending or unacked."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(bus.js, subjects.WORK_STREAM, durable, subject, handler, stop))
    try:
        async with asyncio.timeout(20):
            while True:
                await asyncio.sleep(0.1)
                info = await bus.js.consumer_info(subjects.WORK_STREAM, durable)
                if (
                    info.delivered.stream_seq >= expect
                    and info.num_pending == 0
                    and info.num_ack_pending == 0
                ):
                    break
        await asyncio.sleep(0.5)  # a nak would come back at once: give it the chance to
        info = await bus.js.consumer_info(subjects.WORK_STREAM, durable)
        assert info.num_redelivered == 0 and info.num_ack_pending == 0, info
    finally:
        stop.set()
        await task


async def test_signed_malformed_build_work_is_refused_once(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    gateway = await _bus_as(nats_server, "gateway", home)
    builder = await _bus_as(nats_server, "builder", home)
    try:
        # what an older or newer gateway might send: signed, but not a build item
        await gateway.publish_work("build", "bad-1", b'{"release_id": "../etc"}')
        await gateway.publish_work("build", "bad-2", b"[]")
        await gateway.publish_work("build", "bad-3", b'{"release_id": "r1", "lock": "7"}')
        with caplog.at_level(logging.ERROR, logger="ferry.infra.worker"):
            await _drain(builder, subjects.BUILDER, subjects.BUILD_WORK, partial(build, deps=None), 3)
        refused = [r for r in caplog.records if r.getMessage() == "refused malformed work; nothing ran"]
        assert sorted(r.field for r in refused) == ["body", "lock", "release_id"]  # type: ignore[attr-defined]
    finally:
        await builder.close()
        await gateway.close()


async def test_agents_get_host_work_as_models_and_refuse_what_is_not(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    gateway = await _bus_as(nats_server, "gateway", home)
    agent = await _bus_as(nats_server, "agent", home)
    seen: list[DeployWork] = []
    try:
        good = DeployWork(release_id="r1", host="web1.example.com", lock=3)
        await gateway.queue(subjects.host_work("default", "deploy"), good)
        await gateway.publish_work("host.default.deploy", "deploy:r1:nohost", b'{"release_id": "r1"}')

        async def dispatch(msg: Msg) -> None:  # the agent's own dispatch, with a recording deploy
            handler = HANDLERS[subjects.action_of(msg.subject)]
            assert handler.__name__ == "deploy"
            seen.append(DeployWork.parse(msg.data))

        await _drain(agent, subjects.agent_consumer("default"), work_filters("default"), dispatch, 2)
        assert seen == [good]
        assert cast(BuildWork | DeployWork, seen[0]).canonical() == good.canonical()
    finally:
        await agent.close()
        await gateway.close()
