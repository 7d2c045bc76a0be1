"""Rollout strategies end to end: canary pauses and resumes (by hand and by timer), rolling
batches never overlap. Real processes, real sshd hosts, real git."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd]


@pytest.fixture
def sample(tmp_path: Path):
    return make_sample_repo(tmp_path / "sample")


def set_strategy(system: System, **fields: Any) -> None:
    r = system.api.patch("/api/projects/web/environments/prod", json=fields)
    assert r.status_code == 200, r.text


def wait_status(system: System, release_id: str, status: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = system.api.get(f"/api/releases/{release_id}").json()
        if last["status"] == status:
            return last
        assert last["status"] not in ("succeeded", "failed", "cancelled"), last
        system.launcher.check_children()
        time.sleep(0.2)
    raise AssertionError(f"{release_id} never {status}: {last.get('status')}\n{system.logs()}")


def test_canary_pauses_with_one_host_on_the_new_version_then_resumes(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(3)
    port = free_port()
    register(system, hosts, sample.url, app_port=port)
    sample.commit("A")
    assert system.wait(system.release("web", "prod", "main"))["status"] == "succeeded"

    set_strategy(system, strategy="canary", canary_size=1, canary_pause=None)
    sample.commit("B")
    rid = system.release("web", "prod", "main")
    paused = wait_status(system, rid, "paused")
    assert paused["pause"]["hosts_done"] == ["web1"] and paused["pause"]["resume_at"] is None
    assert [fetch(h.address, port) for h in hosts] == ["B", "A", "A"]
    time.sleep(1.0)  # nothing moves while paused (the orchestrator reacted to the pause already)
    assert system.api.get(f"/api/releases/{rid}").json()["status"] == "paused"
    assert [fetch(h.address, port) for h in hosts] == ["B", "A", "A"]
    assert _eventually_listed(system, rid), "the read model lists the release as paused"

    r = system.post(f"/api/releases/{rid}/resume", {}, 200)
    assert r.json()["status"] == "deploying"
    done = system.wait(rid)
    assert done["status"] == "succeeded", done
    assert [fetch(h.address, port) for h in hosts] == ["B", "B", "B"]
    events = system.events(rid)
    types = [e["type"] for e in events]
    assert types.count("release.paused") == 1 and types.count("release.resumed") == 1
    first_other = min(
        i for i, e in enumerate(events) if e["type"] == "host.step_started" and e["host"] != "web1"
    )
    assert types.index("release.resumed") < first_other


def _eventually_listed(system: System, rid: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = system.api.get("/api/releases", params={"status": "paused"}).json()["releases"]
        if rid in [r["id"] for r in listed]:
            return True
        time.sleep(0.2)
    return False


def test_timed_canary_resumes_by_itself(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(2)
    port = free_port()
    register(system, hosts, sample.url, app_port=port)
    set_strategy(system, strategy="canary", canary_pause=1)
    sample.commit("A")
    rid = system.release("web", "prod", "main")
    done = system.wait(rid)
    assert done["status"] == "succeeded", done
    events = system.events(rid)
    (paused,) = [e for e in events if e["type"] == "release.paused"]
    (resumed,) = [e for e in events if e["type"] == "release.resumed"]
    assert resumed["by"] == "timer" and resumed["at"] >= paused["resume_at"]
    assert done["pause"]["resumed_by"] == "timer"
    assert [fetch(h.address, port) for h in hosts] == ["A", "A"]


def test_rolling_batches_never_overlap(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(3)
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=3)
    set_strategy(system, strategy="rolling", batch_size=2)
    sample.commit("A")
    rid = system.release("web", "prod", "main")
    assert system.wait(rid)["status"] == "succeeded"
    events = system.events(rid)
    host_events = [(i, e["host"]) for i, e in enumerate(events) if "host" in e]
    last_of_first_batch = max(i for i, h in host_events if h in ("web1", "web2"))
    first_of_second = min(i for i, h in host_events if h == "web3")
    assert last_of_first_batch < first_of_second, [(e["type"], e.get("host"), e.get("step")) for e in events]
    # within the first batch both hosts were in flight together (concurrency still applies inside)
    started = [e["host"] for e in events if e["type"] == "host.step_started" and e["step"] == "upload"]
    assert started[:2] and set(started[:2]) == {"web1", "web2"}
    assert [fetch(h.address, port) for h in hosts] == ["A", "A", "A"]
