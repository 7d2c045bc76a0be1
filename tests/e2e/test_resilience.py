"""Releases survive crashes: agents share work, and a killed builder or agent resumes where it was."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import current_of, fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System, start_system

pytestmark = [pytest.mark.sshd]


@pytest.fixture
def resilient(tmp_path: Path, nats_server):
    """Two agents taking one host each at a time, with work redelivered 3 s after a crash."""
    s = start_system(
        tmp_path / "home",
        nats_url=nats_server.url,
        agents=2,
        extra_env={"FERRY_AGENT_CONCURRENCY": "1", "FERRY_WORK_ACK_WAIT": "3"},
    )
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


def wait_for_event(system: System, rid: str, pred, timeout: float = 60.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in system.events(rid):
            if pred(e):
                return e
        time.sleep(0.1)
    raise AssertionError(f"no matching event in {rid} after {timeout}s")


def crash(system: System, name: str) -> None:
    proc = system.launcher.procs[name]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    system.launcher.spawn(name)


def test_two_agents_share_the_hosts_of_one_release(resilient: System, sshd_hosts, tmp_path):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    register(resilient, hosts, sample.url, app_port=free_port(), concurrency=2)
    sample.commit("A")
    rid = resilient.release("web", "prod", "main")
    assert resilient.wait(rid)["status"] == "succeeded"
    agents = {e["agent"] for e in resilient.events(rid) if e["type"] == "host.step_started"}
    assert agents == {"agent-1", "agent-2"}


def test_agent_killed_mid_step_resumes_without_activating_twice(resilient: System, sshd_hosts, tmp_path):
    hosts = sshd_hosts(1)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(resilient, hosts, sample.url, app_port=port)
    resilient.api.patch("/api/projects/web", json={"pre_release": "sleep 4; echo pre-release done"})
    sample.commit("A")
    rid = resilient.release("web", "prod", "main")
    started = wait_for_event(
        resilient, rid, lambda e: e["type"] == "host.step_started" and e["step"] == "pre_release"
    )
    crash(resilient, started["agent"])
    done = resilient.wait(rid, timeout=120)
    assert done["status"] == "succeeded"
    events = resilient.events(rid)
    pre = [e for e in events if e["type"] == "host.step_started" and e["step"] == "pre_release"]
    assert len(pre) >= 2, "the interrupted step ran again"
    uploads = [e for e in events if e["type"] == "host.step_finished" and e["step"] == "upload"]
    assert len(uploads) == 1, "the finished upload was not repeated"
    activations = [e for e in events if e["type"] == "host.step_finished" and e["step"] == "activate"]
    assert len(activations) == 1
    assert current_of(hosts[0]) == f"releases/{rid}"
    assert fetch(hosts[0].address, port) == "A"


def test_builder_killed_mid_hook_resumes(resilient: System, sshd_hosts, tmp_path):
    hosts = sshd_hosts(1)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(resilient, hosts, sample.url, app_port=port, build_hooks=["sleep 4", "echo built > BUILT"])
    sample.commit("A")
    rid = resilient.release("web", "prod", "main")
    wait_for_event(resilient, rid, lambda e: e["type"] == "build.source_fetched")
    crash(resilient, "builder")
    done = resilient.wait(rid, timeout=120)
    assert done["status"] == "succeeded"
    events = resilient.events(rid)
    assert sum(e["type"] == "build.source_fetched" for e in events) == 1
    assert sum(e["type"] == "build.artifact_packaged" for e in events) == 1
    assert (hosts[0].srv_path / "app" / "current" / "BUILT").read_text().strip() == "built"


def test_nats_server_killed_mid_release_and_restarted_the_release_finishes(
    resilient: System, nats_server, sshd_hosts, tmp_path
):
    hosts = sshd_hosts(2)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(resilient, hosts, sample.url, app_port=port, concurrency=2)
    resilient.api.patch("/api/projects/web", json={"pre_release": "sleep 3"})
    sample.commit("A")
    rid = resilient.release("web", "prod", "main")
    wait_for_event(resilient, rid, lambda e: e["type"] == "host.step_started" and e["step"] == "pre_release")
    nats_server.kill()  # SIGKILL, as a crash would
    nats_server.start()  # same store, same port
    done = resilient.wait(rid, timeout=180)
    assert done["status"] == "succeeded", [e for e in resilient.events(rid) if "fail" in e["type"]]
    for h in hosts:
        assert fetch(h.address, port) == "A"
    activations = [
        e for e in resilient.events(rid) if e["type"] == "host.step_finished" and e["step"] == "activate"
    ]
    assert sorted(e["host"] for e in activations) == ["web1", "web2"]


def test_gateway_started_while_nats_is_away_serves_503s_then_recovers(
    resilient: System, nats_server, sshd_hosts, tmp_path
):
    import time

    hosts = sshd_hosts(1)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(resilient, hosts, sample.url, app_port=port)
    sample.commit("A")
    nats_server.kill()
    crash(resilient, "gateway")  # a gateway (re)started during the outage
    deadline = time.monotonic() + 30
    health = None
    while time.monotonic() < deadline:
        try:
            health = resilient.api.get("/healthz", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert health is not None, "the gateway does not serve while NATS is away"
    assert health.status_code == 503
    assert health.json()["error"]["code"] == "STORE_UNAVAILABLE"
    assert nats_server.address in health.json()["error"]["message"]
    r = resilient.api.post("/api/releases", json={"project": "web", "environment": "prod", "ref": "main"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "STORE_UNAVAILABLE"
    assert resilient.api.get("/api/projects/web").status_code == 200  # the database still answers

    nats_server.start()  # same store, same port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and resilient.api.get("/healthz").status_code != 200:
        time.sleep(0.1)
    assert resilient.api.get("/healthz").json() == {"ok": True, "nats": True}
    rid = resilient.release("web", "prod", "main")
    assert resilient.wait(rid, timeout=60)["status"] == "succeeded"
    assert fetch(hosts[0].address, port) == "A"
