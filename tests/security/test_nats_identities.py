"""Issue 9 acceptance: NATS clients authenticate, and each identity may publish only what it must.

A real nats-server (tests/harness/nats.py) configured exactly as ``ferry up`` configures it
(ferry.infra.natsauth). A permission violation is reported by the server asynchronously; a flush
after the publish guarantees it arrived (the server answers in order).
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from dataclasses import replace
from pathlib import Path

import nats
import nats.errors
import pytest

from ferry.domain.errors import StoreUnavailable
from ferry.domain.events import BuildStarted, HostStepStarted, Plan, Recipe, ReleaseRequested, utcnow
from ferry.infra.bus import Bus, connect, open_bus
from ferry.infra.eventstore import TypeNotAllowed, host_subject, release_subject
from ferry.infra.natsauth import IDENTITIES, credential_path
from ferry.infra.settings import Settings
from ferry.infra.signing import ensure_signing_key
from ferry.local.natsserver import NatsServer


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


WAIT = 10.0


class Violations:
    """Errors the server reports to one client; they arrive asynchronously, not in step with a flush."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.arrived = asyncio.Event()

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self.arrived.set()

    async def wait_for(self, *words: str) -> bool:
        """Whether an error naming all ``words`` arrives (within WAIT seconds)."""
        async with asyncio.timeout(WAIT):
            while not any(all(w.lower() in e.lower() for w in words) for e in self.errors):
                self.arrived.clear()
                await self.arrived.wait()
        return True


async def refused(server: NatsServer, identity: str, subject: str, data: bytes = b"{}") -> bool:
    """Whether the server refuses ``identity`` a publish to ``subject``."""
    violations = Violations()
    nc = await nats.connect(
        server.url_for(identity),
        error_cb=violations.record,
        allow_reconnect=False,
        inbox_prefix=f"_INBOX.{identity}",
    )
    try:
        await nc.publish(subject, data)
        return await violations.wait_for("permissions violation", subject)
    finally:
        await nc.close()


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
    nats_server: NatsServer, bus: Bus
):
    rid = f"forged-{uuid.uuid4().hex[:8]}"
    subject = release_subject(rid)
    assert await refused(nats_server, "agent", subject, _requested(rid).to_json())
    build = BuildStarted(release_id=rid, version=1, at=utcnow(), builder="mallory")
    assert await refused(nats_server, "agent", subject, build.to_json())
    for other in (
        "ferry.work.build",
        "ferry.work.host.default.deploy",
        "$JS.API.STREAM.UPDATE.FERRY_EVENTS",
        "$JS.API.STREAM.PURGE.FERRY_EVENTS",
        "$JS.API.CONSUMER.DELETE.FERRY_WORK.builder",
    ):
        assert await refused(nats_server, "agent", other), other
    assert await bus.events.load(rid) == []  # nothing reached the stream
    work = await bus.js.stream_info("FERRY_WORK")
    assert work.state.messages == 0


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


async def test_builder_and_notifier_stay_in_their_lanes(nats_server: NatsServer, bus: Bus):
    for subject in ("ferry.release.r1.host.web1", "ferry.work.host.default.deploy", "ferry.work.build"):
        assert await refused(nats_server, "builder", subject), subject
    for subject in ("ferry.release.r1.release", "ferry.release.r1.host.web1", "ferry.work.build"):
        assert await refused(nats_server, "notifier", subject), subject
    builder = await nats.connect(nats_server.url_for("builder"), inbox_prefix="_INBOX.builder")
    try:  # its own lane: a release-level subject, stored
        ack = await builder.jetstream().publish("ferry.release.r1.release", b"{}")
        assert ack.stream == "FERRY_EVENTS"
    finally:
        await builder.close()


async def test_chatops_reads_the_live_feed_and_nothing_else(nats_server: NatsServer, bus: Bus):
    violations = Violations()
    chatops = await nats.connect(
        nats_server.url_for("chatops"), error_cb=violations.record, allow_reconnect=False
    )
    try:
        feed = await chatops.subscribe("ferry.release.>")
        await chatops.flush()
        rid = f"r-{uuid.uuid4().hex[:8]}"
        await bus.events.append([_requested(rid)], expected_seq=0, whole_release=True)
        msg = await feed.next_msg(timeout=5)
        assert msg.subject == release_subject(rid)
        await chatops.subscribe("ferry.work.>")
        assert await violations.wait_for("subscription", "ferry.work.>")
    finally:
        await chatops.close()
    for subject in ("ferry.release.r1.release", "$JS.API.STREAM.INFO.FERRY_EVENTS", "ferry.health.agent"):
        assert await refused(nats_server, "chatops", subject), subject
