"""Issue 8: a rollback to a release whose directory the hosts still hold is the switch, a restart
and a health check — no bytes, no extraction; a host that lost the directory gets the fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import current_of, fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd]


def test_rollback_switches_instantly_where_the_directory_is_kept(system: System, sshd_hosts, tmp_path: Path):
    hosts = sshd_hosts(3)
    sample = make_sample_repo(tmp_path / "sample")
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=3)
    sample.commit("A")
    first = system.release("web", "prod", "main")
    assert system.wait(first)["status"] == "succeeded"
    sample.commit("B")
    second = system.release("web", "prod", "main")
    assert system.wait(second)["status"] == "succeeded"
    shutil.rmtree(hosts[2].srv_path / "app" / "releases" / first)  # web3 lost the old directory

    r = system.post(f"/api/releases/{first}/rollback", {}, 202)
    back = r.json()["id"]
    view = system.wait(back)
    assert view["status"] == "succeeded"
    by_name = {h["name"]: h for h in view["hosts"]}
    for name, h in (("web1", hosts[0]), ("web2", hosts[1])):
        steps = {s["step"]: s for s in by_name[name]["steps"]}
        assert by_name[name]["instant"] == first
        assert steps["upload"]["output_tail"].startswith("instant:"), "nothing sent, nothing extracted"
        assert all(
            steps[s]["output_tail"].startswith("instant:") for s in ("link", "pre_release", "post_release")
        )
        assert current_of(h) == f"releases/{first}" and fetch(h.address, port) == "A"
        assert not (h.srv_path / "app" / "releases" / back).exists(), "no new directory was made"
    # the fallback: web3 extracts the artifact again into the rollback's own directory
    assert by_name["web3"]["instant"] is None
    assert current_of(hosts[2]) == f"releases/{back}" and fetch(hosts[2].address, port) == "A"
    events = system.events(back)
    uploads = [e for e in events if e["type"] == "host.step_finished" and e["step"] == "upload"]
    assert sorted((e["host"], e["detail"].get("transferred")) for e in uploads)[:2] == [
        ("web1", 0),
        ("web2", 0),
    ]

    fleet = system.api.get("/api/projects/web/environments/prod/hosts").json()["hosts"]
    assert [h["release"] for h in fleet] == [first, first, back], "the history knows which directory runs"
    doctor = system.api.get("/api/projects/web/environments/prod/doctor", timeout=120).json()
    assert doctor["drift"] == []
