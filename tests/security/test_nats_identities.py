"""Issue 9 acceptance: NATS clients authenticate, and each identity may publish only what it must.

A real nats-server (tests/harness/nats.py) configured exactly as ``ferry up`` configures it
(ferry.natsauth). A permission violation is reported by the server asynchronously; a flush
after the publish guarantees it arrived (the server answers in order).
"""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from ferry.bus import Bus, connect, open_bus
from ferry.errors import StoreUnavailable
from ferry.events import BuildStarted, HostStepStarted, Plan, Recipe, ReleaseRequested, utcnow
from ferry.eventstore import TypeNotAllowed, host_subject, release_subject
from ferry.natsauth import IDENTITIES, credential_path
from ferry.natsserver import NatsServer
from ferry.settings import Settings
from ferry.signing import ensure_signing_key


def _requested(rid: str) -> ReleaseRequested:
    recipe = Recipe(repo_url="https://git.example.com/app.git", deploy_path="/srv/app", pre_release="id")
    return ReleaseRequested(
        release_id=rid,
        version=1,
        at=utcnow(),
        project="web",
        environment="prod",
        ref="main",
        requested_by="mallory",
        plan=Plan(recipe=recipe, hosts=("web1",)),
    )


class Raw:
    """A plain nats-py client as ``identity``, recording the errors the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def open(self, server: NatsServer, identity: str) -> Raw:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            server.url_for(identity),
            error_cb=on_error,
            allow_reconnect=False,
            inbox_prefix=f"_INBOX.{identity}",
        )
        return self

    async def publish(self, subject: str, data: bytes = b"{}") -> None:
        assert self.nc is not None
        await self.nc.publish(subject, data)
        await self.nc.flush()

    def refused(self, subject: str) -> bool:
        return any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors)


@pytest.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[dict[str, Raw]]:
    clients: dict[str, Raw] = {}
    for identity in ("agent", "builder", "notifier", "chatops"):
        clients[identity] = await Raw().open(nats_server, identity)
    try:
        yield clients
    finally:
        for c in clients.values():
            assert c.nc is not None
            await c.nc.close()


@pytest.fixture
def service_settings(tmp_path: Path) -> Settings:
    """Settings of a service process: a work key pair under its FERRY_HOME."""
    settings = Settings(home=tmp_path / "home")
    ensure_signing_key(settings.signing_key_path)
    return settings


async def _bus_as(server: NatsServer, identity: str, settings: Settings) -> Bus:
    return await open_bus(
        server.address,
        name=f"test-{identity}",
        settings=replace(settings, nats_creds=credential_path(server.credentials_dir, identity)),
    )


async def test_a_client_without_credentials_is_refused(nats_server: NatsServer):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.address, allow_reconnect=False, max_reconnect_attempts=0)
    wrong = nats_server.address.replace("nats://", "nats://agent:not-the-password@")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(wrong, allow_reconnect=False, max_reconnect_attempts=0)
    with pytest.raises(StoreUnavailable, match="without credentials"):
        await connect(nats_server.address, name="anonymous")


async def test_credentials_are_private_and_the_server_keeps_only_hashes(nats_server: NatsServer):
    directory = nats_server.credentials_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    config = (nats_server.store_dir / "nats.conf").read_text()
    assert stat.S_IMODE((nats_server.store_dir / "nats.conf").stat().st_mode) == 0o600
    for identity in IDENTITIES:
        path = credential_path(directory, identity)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert nats_server.credentials[identity].password not in config
    assert "$2a$" in config


async def test_an_agent_cannot_publish_release_requested_nor_the_builders_events(
    nats_server: NatsServer, bus: Bus, raw: dict[str, Raw]
):
    rid = f"forged-{uuid.uuid4().hex[:8]}"
    agent = raw["agent"]
    subject = release_subject(rid)
    await agent.publish(subject, _requested(rid).to_json())
    assert agent.refused(subject), agent.errors
    build = BuildStarted(release_id=rid, version=2, at=utcnow(), builder="mallory")
    await agent.publish(subject, build.to_json())
    for other in ("ferry.work.build", "ferry.work.host.default.deploy", "$JS.API.STREAM.UPDATE.FERRY_EVENTS"):
        await agent.publish(other)
        assert agent.refused(other), (other, agent.errors)
    await agent.publish("$JS.API.STREAM.PURGE.FERRY_EVENTS")
    assert agent.refused("$JS.API.STREAM.PURGE.FERRY_EVENTS")
    assert await bus.events.load(rid) == []  # nothing reached the stream


async def test_the_store_refuses_event_types_of_other_identities(
    nats_server: NatsServer, bus: Bus, service_settings: Settings
):
    rid = f"r-{uuid.uuid4().hex[:8]}"
    agent = await _bus_as(nats_server, "agent", service_settings)
    builder = await _bus_as(nats_server, "builder", service_settings)
    try:
        with pytest.raises(TypeNotAllowed, match="agent identity may not append release.requested"):
            await agent.events.append([_requested(rid)], expected_seq=0, whole_release=True)
        build = BuildStarted(release_id=rid, version=1, at=utcnow())
        with pytest.raises(TypeNotAllowed, match="build.started"):
            await agent.events.append([build], expected_seq=0, whole_release=True)
        with pytest.raises(TypeNotAllowed, match="builder identity may not append release.requested"):
            await builder.events.append([_requested(rid)], expected_seq=0, whole_release=True)
        # what each may do, it can: an agent appends a host's step on the host's subject
        step = HostStepStarted(release_id=rid, version=1, at=utcnow(), host="web1", step="upload")
        (seq,) = await agent.events.append([step], expected_seq=0, whole_release=False)
        assert [s.seq for s in await bus.events.load(rid)] == [seq]
        assert (await bus.events.load(rid))[0].subject == host_subject(rid, "web1")
    finally:
        await agent.close()
        await builder.close()


async def test_builder_and_notifier_stay_in_their_lanes(nats_server: NatsServer, raw: dict[str, Raw]):
    builder, notifier = raw["builder"], raw["notifier"]
    for subject in ("ferry.release.r1.host.web1", "ferry.work.host.default.deploy", "ferry.work.build"):
        await builder.publish(subject)
        assert builder.refused(subject), (subject, builder.errors)
    for subject in ("ferry.release.r1.release", "ferry.release.r1.host.web1", "ferry.work.build"):
        await notifier.publish(subject)
        assert notifier.refused(subject), (subject, notifier.errors)


async def test_chatops_reads_the_live_feed_and_nothing_else(
    nats_server: NatsServer, bus: Bus, raw: dict[str, Raw]
):
    chatops = raw["chatops"]
    assert chatops.nc is not None
    feed = await chatops.nc.subscribe("ferry.release.>")
    await chatops.nc.flush()
    rid = f"r-{uuid.uuid4().hex[:8]}"
    await bus.events.append([_requested(rid)], expected_seq=0, whole_release=True)
    msg = await feed.next_msg(timeout=5)
    assert msg.subject == release_subject(rid)
    for subject in ("ferry.release.r1.release", "$JS.API.STREAM.INFO.FERRY_EVENTS", "ferry.health.agent"):
        await chatops.publish(subject)
        assert chatops.refused(subject), (subject, chatops.errors)
    await chatops.nc.subscribe("ferry.work.>")
    await chatops.nc.flush()
    assert any("subscription" in e.lower() and "ferry.work.>" in e for e in chatops.errors), chatops.errors
