"""Issue 8: one release at a time per environment, on real sshd hosts through the whole system.

Releases requested together run one after another in request order; ``on_busy: reject`` refuses
a second with 409; a lock survives SIGKILL of the gateway and the agent; an admin can force it.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import current_of, fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import TERMINAL, System

pytestmark = [pytest.mark.sshd]


def deploying_window(events: list[dict]) -> tuple[datetime, datetime]:
    """From a release's build start to its end, as its events tell."""
    start = next(e["at"] for e in events if e["type"] == "build.started")
    end = next(
        e["at"] for e in events if e["type"] in ("release.succeeded", "release.failed", "release.cancelled")
    )
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def wait_status(system: System, rid: str, statuses: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = system.api.get(f"/api/releases/{rid}").json()
        if view["status"] in statuses:
            return view
        time.sleep(0.1)
    raise AssertionError(f"{rid} never reached {statuses}")


def test_releases_requested_together_run_one_after_another_in_order(
    system: System, sshd_hosts, tmp_path: Path
):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=2)
    versions = {sample.commit("V1"): "V1", sample.commit("V2"): "V2"}
    one, two = versions
    # five requests at once, alternating between two commits: the last requested ends up live
    wanted = [one, two, one, two, one]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        ids = list(pool.map(lambda ref: system.release("web", "prod", ref), wanted))
    lock = system.api.get("/api/projects/web/environments/prod/lock").json()
    in_line = [lock["active_release"], *lock["queue"]]  # the order the server took the requests in
    views = [system.api.get(f"/api/releases/{rid}").json() for rid in ids]
    assert sum(1 for v in views if v.get("queue_position")) >= 1, "the later requests wait their turn"
    env = system.api.get("/api/projects/web/environments/prod").json()
    assert env["active_release"] in ids and len(env["queue"]) <= 4
    done = [system.wait(rid, timeout=180) for rid in ids]
    assert [d["status"] for d in done] == ["succeeded"] * 5
    windows = sorted(deploying_window(system.events(rid)) for rid in ids)
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert start >= end, "two releases of one environment ran at once"
    order = [rid for _, rid in sorted((deploying_window(system.events(rid))[0], rid) for rid in ids)]
    assert sorted(in_line) == sorted(ids)
    assert order == in_line, "they ran in the order they were requested"
    requested = in_line
    last = requested[-1]
    for h in hosts:
        assert current_of(h) == f"releases/{last}"
        assert fetch(h.address, port) == versions[wanted[ids.index(last)]]
    env = system.api.get("/api/projects/web/environments/prod").json()
    assert env["active_release"] is None and env["queue"] == []


def test_reject_mode_refuses_a_second_release_and_creates_nothing(system: System, sshd_hosts, tmp_path: Path):
    hosts = sshd_hosts(1)
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=free_port(), concurrency=1)
    r = system.api.patch(
        "/api/projects/web/environments/prod", json={"on_busy": "reject", "require_approval": True}
    )
    assert r.status_code == 200, r.text
    sample.commit("A")
    first = system.release("web", "prod", "main")  # holds the environment while it awaits approval
    second = system.post("/api/releases", {"project": "web", "environment": "prod", "ref": "main"})
    assert second.status_code == 409, second.text
    assert first in second.text
    listed = system.api.get("/api/releases", params={"project": "web"}).json()["releases"]
    assert [r["id"] for r in listed] in ([first], []), "nothing of the refused request was created"
    lock = system.api.get("/api/projects/web/environments/prod/lock").json()
    assert (lock["active_release"], lock["queue"]) == (first, [])
    # an admin forces the environment free: the holder ends, with who and why
    r = system.post("/api/projects/web/environments/prod/unlock", {"reason": "stuck in approval"}, 200)
    assert r.json()["active_release"] is None
    view = system.wait(first, timeout=30)
    assert (
        view["status"] == "failed"
        and "force-released" in view["reason"]
        and "stuck in approval" in view["reason"]
    )
    third = system.release("web", "prod", "main")
    assert system.api.get("/api/projects/web/environments/prod/lock").json()["active_release"] == third


def test_the_lock_survives_killed_services_and_the_queued_release_starts(
    system: System, sshd_hosts, tmp_path: Path
):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=1)
    sample.commit("A")
    holder = system.release("web", "prod", "main")
    queued = system.release("web", "prod", "main")
    wait_status(system, holder, {"deploying"} | TERMINAL)
    for name in ("gateway", "agent-1"):
        proc = system.launcher.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        system.launcher.spawn(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the restarted gateway answers again
        try:
            if system.api.get("/api/projects/web").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    assert system.wait(holder, timeout=180)["status"] == "succeeded"
    assert system.wait(queued, timeout=180)["status"] == "succeeded"
    for h in hosts:
        assert current_of(h) == f"releases/{queued}"
    lock = system.api.get("/api/projects/web/environments/prod/lock").json()
    assert lock["active_release"] is None and lock["queue"] == []
