"""Issue 9 acceptance: work and plans carry the gateway's signature; builder and agents refuse the rest.

From the signature itself, through the consumer loop on a real nats-server, to the whole
system on a real sshd host: a forged plan and a forged work item run nothing on the host.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from ferry.domain.events import Plan, Recipe, ReleaseRequested, utcnow
from ferry.domain.release import RecordArtifact, RecordSource, StartBuild
from ferry.infra.bus import WORK_PREFIX, WORK_STREAM, Bus, open_bus
from ferry.infra.commands import execute
from ferry.infra.eventstore import EventStore, host_subject
from ferry.infra.natsauth import credential_path
from ferry.infra.settings import Settings
from ferry.infra.signing import UntrustedWork, WorkSigner, ensure_signing_key
from ferry.infra.worker import run_consumer
from ferry.local.natsserver import NatsServer, free_port
from tests.e2e.test_pipeline import register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

PWNED = "/srv/PWNED"


def _request(rid: str, hosts: tuple[str, ...] = ("web1",), hook: str = f"touch {PWNED}") -> ReleaseRequested:
    recipe = Recipe(repo_url="https://git.example.com/app.git", deploy_path="/srv/app", pre_release=hook)
    return ReleaseRequested(
        release_id=rid,
        version=1,
        at=utcnow(),
        project="web",
        environment="prod",
        ref="main",
        requested_by="mallory",
        plan=Plan(recipe=recipe, hosts=hosts),
    )


def test_signatures_cover_subject_id_body_and_the_whole_plan(tmp_path: Path):
    gateway = ensure_signing_key(tmp_path / "keys" / "work-signing.key")
    verifier = gateway.verifier
    headers = {
        "Nats-Msg-Id": "deploy:r1:web1",
        **gateway.headers("ferry.work.host.default.deploy", "deploy:r1:web1", b"{}"),
    }
    verifier.verify_work("ferry.work.host.default.deploy", headers, b"{}")
    for subject, body, msg_id in (
        ("ferry.work.host.default.deploy", b'{"host":"web2"}', "deploy:r1:web1"),  # altered body
        ("ferry.work.host.eu.deploy", b"{}", "deploy:r1:web1"),  # moved to another group
        ("ferry.work.host.default.deploy", b"{}", "deploy:r1:web2"),  # another id
    ):
        with pytest.raises(UntrustedWork, match="bad signature"):
            verifier.verify_work(subject, {**headers, "Nats-Msg-Id": msg_id}, body)
    with pytest.raises(UntrustedWork, match="not signed"):
        verifier.verify_work("ferry.work.build", {"Nats-Msg-Id": "x"}, b"{}")

    signed = gateway.sign_plan(_request("r1", hook="bin/migrate"))
    verifier.verify_plan(signed)
    altered = signed.model_copy(update={"plan": _request("r1").plan})  # pre_release replaced
    with pytest.raises(UntrustedWork, match="plan of release r1 has a bad signature"):
        verifier.verify_plan(altered)
    forged = WorkSigner(Ed25519PrivateKey.generate()).sign_plan(_request("r1"))
    with pytest.raises(UntrustedWork, match="bad signature"):
        verifier.verify_plan(forged)
    with pytest.raises(UntrustedWork, match="not signed"):
        verifier.verify_plan(_request("r1"))
    assert (tmp_path / "keys" / "work-signing.key").stat().st_mode & 0o777 == 0o600


async def _bus_as(server: NatsServer, identity: str, home: Path) -> Bus:
    settings = Settings(home=home, nats_creds=credential_path(server.credentials_dir, identity))
    return await open_bus(server.address, name=f"test-{identity}", settings=settings)


async def test_a_builder_runs_only_signed_work_and_reads_only_signed_plans(
    nats_server: NatsServer, tmp_path: Path
):
    home = tmp_path / "home"
    gateway = await _bus_as(nats_server, "gateway", home)  # creates the key pair on first start
    builder = await _bus_as(nats_server, "builder", home)
    try:
        # the gateway's own request is signed on the way into the store; the builder reads it
        rid = f"r-{uuid.uuid4().hex[:8]}"
        await gateway.events.append([_request(rid, hook="bin/migrate")], expected_seq=0, whole_release=True)
        assert (await builder.histories.state(rid)).plan is not None

        # a request appended without the gateway's key (any stolen write credential) is refused
        forged = f"f-{uuid.uuid4().hex[:8]}"
        await EventStore(gateway.js).append([_request(forged)], expected_seq=0, whole_release=True)
        with pytest.raises(UntrustedWork, match=f"plan of release {forged} is not signed"):
            await builder.histories.state(forged)
        # a request published on a host's subject (the agent may write those) is refused too
        sneaky = f"s-{uuid.uuid4().hex[:8]}"
        assert gateway.signer is not None
        signed = gateway.signer.sign_plan(_request(sneaky)).to_json()
        mallory = await open_bus(nats_server.url, name="mallory", setup=False, settings=Settings(home=home))
        await mallory.js.publish(host_subject(sneaky, "web1"), signed)  # as an agent could
        await mallory.close()
        with pytest.raises(UntrustedWork, match="found on"):
            await builder.histories.state(sneaky)

        # work: an unsigned item is terminated before the handler, the signed one runs
        handled: list[bytes] = []
        done = asyncio.Event()
        stop = asyncio.Event()

        async def handler(msg: Msg) -> None:
            handled.append(msg.data)
            done.set()

        await gateway.js.publish(
            f"{WORK_PREFIX}.build", b'{"release_id": "unsigned"}', headers={"Nats-Msg-Id": "u1"}
        )
        await gateway.publish_work("build", "s1", {"release_id": "signed"})
        task = asyncio.create_task(
            run_consumer(builder.js, WORK_STREAM, "builder", f"{WORK_PREFIX}.build", handler, stop)
        )
        await asyncio.wait_for(done.wait(), 20)
        stop.set()
        await task
        assert [json.loads(h) for h in handled] == [{"release_id": "signed"}]
        info = await builder.js.consumer_info(WORK_STREAM, "builder")
        assert info.num_ack_pending == 0 and info.num_pending == 0  # the unsigned one was terminated
    finally:
        await builder.close()
        await gateway.close()


def _wait_for_log(system: System, service_glob: str, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((system.settings.home / "logs").glob(service_glob)):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        system.launcher.check_children()
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in {service_glob} after {timeout}s\n{system.logs()}")


@pytest.mark.sshd
def test_forged_plans_and_work_run_nothing_on_a_real_host(
    system: System, sshd_hosts, nats_server: NatsServer, tmp_path: Path
):
    (host,) = sshd_hosts(1)
    sample = make_sample_repo(tmp_path / "sample")
    register(system, [host], sample.url, app_port=free_port())
    sample.commit("1")
    # the genuine path: the gateway signs, builder and agent verify, the host gets the release
    real = system.release("web", "prod", "main")
    assert system.wait(real)["status"] == "succeeded", system.logs()
    before = sorted(p.name for p in (host.srv_path / "app" / "releases").iterdir())

    async def forge() -> str:
        # an attacker with a NATS write credential but not the gateway's key
        bus = await open_bus(
            nats_server.url, name="mallory", setup=False, settings=Settings(home=tmp_path / "m")
        )
        try:
            rid = f"forged-{uuid.uuid4().hex[:8]}"
            request = WorkSigner(Ed25519PrivateKey.generate()).sign_plan(_request(rid))
            await bus.events.append([request], expected_seq=0, whole_release=True)
            artifact = await bus.artifacts.put_bytes(b"not a release")
            for command in (
                StartBuild(builder="mallory"),
                RecordSource(commit="0" * 40),
                RecordArtifact(digest=artifact.digest, size=artifact.size, format="none"),
            ):
                await execute(bus.histories, rid, command)
            # and a work item for it, signed with a key of the attacker's own
            body = json.dumps({"release_id": rid, "host": "web1"}).encode()
            subject = f"{WORK_PREFIX}.host.default.deploy"
            headers = {"Nats-Msg-Id": f"forged:{rid}"}
            headers.update(
                WorkSigner(Ed25519PrivateKey.generate()).headers(subject, headers["Nats-Msg-Id"], body)
            )
            await bus.js.publish(subject, body, stream=WORK_STREAM, headers=headers)
            return rid
        finally:
            await bus.close()

    rid = asyncio.run(forge())
    # the orchestrator's genuinely signed work for the forged release: refused on its plan
    plan_line = _wait_for_log(system, "agent-*.log", f"plan of release {rid} has a bad signature")
    assert "refused unsigned or altered work" in plan_line
    # the forged work item: refused on its own signature
    work_line = _wait_for_log(
        system, "agent-*.log", "work item ferry.work.host.default.deploy has a bad signature"
    )
    assert "nothing ran" in work_line
    _wait_for_log(system, "builder.log", f"plan of release {rid}")  # the build work was refused as well
    assert not (host.srv_path / "PWNED").exists()
    assert sorted(p.name for p in (host.srv_path / "app" / "releases").iterdir()) == before
    assert not [e["type"] for e in system.events(rid) if e["type"].startswith("host.")]


def test_settings_paths_default_under_ferry_home(tmp_path: Path):
    s = Settings(home=tmp_path)
    assert s.signing_key_path == tmp_path / "keys" / "work-signing.key"
    assert s.public_key_path == tmp_path / "keys" / "work-signing.pub"
    assert replace(s, nats_credentials_dir=tmp_path / "c").credentials_dir == tmp_path / "c"
