"""Issue 8: a cancel at any host step leaves every host on exactly one release; a retry touches only
the hosts that failed. Real sshd hosts, the whole system as processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import current_of, fetch, register, releases_on
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd]

SLOW = "sleep 4"


def wait_for_step(system: System, rid: str, step: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["type"] == "host.step_started" and e["step"] == step for e in system.events(rid)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{rid} never started {step}")


HOOKS = ("pre_release", "restart", "post_release")


@pytest.mark.parametrize(
    "step", ["upload", "link", "pre_release", "activate", "restart", "health", "post_release"]
)
def test_a_cancel_at_a_step_leaves_every_host_on_exactly_one_release(
    system: System, sshd_hosts, tmp_path: Path, step: str
):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=2)
    sample.commit("OLD")
    old = system.release("web", "prod", "main")
    assert system.wait(old)["status"] == "succeeded"
    # a hook step is made slow enough to cancel in its middle; for the others a slow last hook
    # keeps the release in flight while the cancel, sent as soon as the step starts, arrives
    project = system.api.get("/api/projects/web").json()
    slow = step if step in HOOKS else "post_release"
    patch = {slow: f"{SLOW}; {project['restart']}" if slow == "restart" else SLOW}
    assert system.api.patch("/api/projects/web", json=patch).status_code == 200
    sample.commit("NEW")
    new = system.release("web", "prod", "main")
    wait_for_step(system, new, step)
    r = system.post(f"/api/releases/{new}/cancel", {"reason": "changed my mind"})
    assert r.status_code == 200, r.text
    view = system.wait(new, timeout=120)
    assert view["status"] == "cancelled", view
    for h, out in zip(hosts, view["hosts"], strict=True):
        # every host had an old release to go back to: each serves exactly it again
        assert fetch(h.address, port) == "OLD"
        assert current_of(h) == f"releases/{old}", "never half-switched"
        # and the page says which way it got there: stopped before switching, or rolled back
        assert out["status"] in ("failed", "rolled_back"), out
        if out["status"] == "failed":
            assert "cancelled" in (out["failure"] or "")
            assert not any(s["step"] == "activate" and s["status"] == "succeeded" for s in out["steps"])


def test_retry_touches_only_the_hosts_that_failed(system: System, sshd_hosts, tmp_path: Path):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=2)
    # the second host refuses releases while a marker sits on it (a full disk, a held lock...)
    hook = 'test ! -e /srv/HOLD || { echo "host on hold" >&2; exit 3; }'
    assert system.api.patch("/api/projects/web", json={"pre_release": hook}).status_code == 200
    # one failed host does not stop the rollout (nor roll back the others)
    assert (
        system.api.patch("/api/projects/web/environments/prod", json={"max_failures": 1}).status_code == 200
    )
    (hosts[1].srv_path / "HOLD").write_text("")
    sample.commit("A")
    first = system.release("web", "prod", "main")
    done = system.wait(first)
    assert done["status"] == "failed"
    assert [h["status"] for h in done["hosts"]] == ["succeeded", "failed"]
    before = (releases_on(hosts[0]), current_of(hosts[0]), (hosts[0].srv_path / "app" / "current").lstat())
    (hosts[1].srv_path / "HOLD").unlink()

    r = system.post(f"/api/releases/{first}/retry", {}, 202)
    retry = r.json()["id"]
    view = system.wait(retry)
    assert view["status"] == "succeeded"
    assert [h["name"] for h in view["hosts"]] == ["web2"], "only the failed host is in the retry"
    assert view["commit"] == done["commit"]
    assert view["artifact"]["digest"] == done["artifact"]["digest"], "the same artifact"
    after = (releases_on(hosts[0]), current_of(hosts[0]), (hosts[0].srv_path / "app" / "current").lstat())
    assert after[:2] == before[:2] and after[2].st_mtime_ns == before[2].st_mtime_ns, "web1 untouched"
    assert current_of(hosts[1]) == f"releases/{retry}" and fetch(hosts[1].address, port) == "A"
    again = system.post(f"/api/releases/{retry}/retry", {})
    assert again.status_code == 409 and "nothing to retry" in again.text
