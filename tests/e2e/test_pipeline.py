"""Issue 3 acceptance: API -> builder -> agents -> real sshd hosts, the whole system as processes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from ferry.local.natsserver import free_port
from tests.harness.sampleapp import health_url, make_sample_repo, restart_command
from tests.harness.system import System

pytestmark = [pytest.mark.sshd]


def fetch(address: str, port: int, path: str = "/") -> str:
    return httpx.get(f"http://{address}:{port}{path}", timeout=5).text.strip()


def register(
    system: System,
    hosts,
    repo_url: str,
    *,
    app_port: int,
    project: str = "web",
    build_hooks: list[str] | None = None,
    keep: int = 5,
    concurrency: int = 2,
) -> None:
    for i, h in enumerate(hosts):  # every harness host authorises its own client key
        cred = "deploy-key" if i == 0 else f"deploy-key-{i + 1}"
        system.post("/api/credentials", {"name": cred, "kind": "ssh_key", "secret": h.client_key_pem}, 201)
        system.post(
            "/api/hosts",
            {
                "name": f"web{i + 1}",
                "address": h.address,
                "port": h.port,
                "user": "root",
                "credential": cred,
                "host_key": h.host_key_line,
                "host_key_policy": "pinned",
            },
            201,
        )
    system.post(
        "/api/projects",
        {
            "name": project,
            "repo_url": repo_url,
            "build_hooks": build_hooks or [],
            "deploy_path": "/srv/app",
            "shared_dirs": ["logs"],
            "keep_releases": keep,
            "restart": restart_command(app_port),
            "health": {
                "kind": "http",
                "target": health_url(app_port),
                "timeout": 2,
                "retries": 20,
                "interval": 0.25,
            },
            "artifact_format": "zst",
        },
        201,
    )
    system.post(
        f"/api/projects/{project}/environments",
        {
            "name": "prod",
            "hosts": [f"web{i + 1}" for i in range(len(hosts))],
            "concurrency": concurrency,
        },
        201,
    )


@pytest.fixture
def sample(tmp_path: Path):
    return make_sample_repo(tmp_path / "sample")


def releases_on(host) -> list[str]:
    return sorted(p.name for p in (host.srv_path / "app" / "releases").iterdir())


def current_of(host) -> str:
    return os.readlink(host.srv_path / "app" / "current")


def test_release_to_three_hosts_then_upgrade_and_prune(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(3)
    port = free_port()
    register(system, hosts, sample.url, app_port=port, keep=2)
    a = sample.commit("A")

    r1 = system.release("web", "prod", "main")
    done = system.wait(r1)
    assert done["status"] == "succeeded", [e for e in system.events(r1) if "failed" in e["type"]]
    assert done["commit"] == a
    for h in hosts:
        assert fetch(h.address, port) == "A"
        assert current_of(h) == f"releases/{r1}"
        assert [s["status"] for s in done["hosts"][0]["steps"]] == ["succeeded"] * 7

    b = sample.commit("B")
    r2 = system.release("web", "prod", b)
    assert system.wait(r2)["status"] == "succeeded"
    for h in hosts:
        assert fetch(h.address, port) == "B"
        assert current_of(h) == f"releases/{r2}"

    sample.commit("C")
    r3 = system.release("web", "prod", "main")
    assert system.wait(r3)["status"] == "succeeded"
    for h in hosts:
        assert fetch(h.address, port) == "C"
        kept = releases_on(h)
        assert kept == sorted([r2, r3]), kept  # keep_releases=2 pruned the oldest, never the live one
        assert current_of(h) == f"releases/{r3}"


def test_failing_build_hook_touches_no_host(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    register(
        system,
        hosts,
        sample.url,
        app_port=free_port(),
        build_hooks=["echo building-now", "echo the-build-broke >&2; exit 1"],
    )
    sample.commit("A")
    rid = system.release("web", "prod", "main")
    done = system.wait(rid)
    assert done["status"] == "failed"
    events = system.events(rid)
    failed = [e for e in events if e["type"] == "build.failed"]
    assert failed and "the-build-broke" in failed[0]["output_tail"]
    assert failed[0]["stage"] == "hooks"
    assert not any(e["type"].startswith("host.") for e in events)
    assert not (hosts[0].srv_path / "app").exists()


def test_failing_health_check_on_one_host_fails_it_and_the_release(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(3)
    port = free_port()
    register(system, hosts, sample.url, app_port=port, concurrency=3)
    sample.commit("A")
    first = system.release("web", "prod", "main")
    assert system.wait(first)["status"] == "succeeded"
    # web2 turns unhealthy whatever it runs
    (hosts[1].srv_path / "app" / "shared" / "FAIL_HEALTH").write_text("sick\n")
    sample.commit("B")
    rid = system.release("web", "prod", "main")
    done = system.wait(rid)
    assert done["status"] == "failed"
    assert "web2" in done["reason"] and "health" in done["reason"]
    events = system.events(rid)
    host_failed = [e for e in events if e["type"] == "host.failed"]
    assert [(e["host"], e["step"]) for e in host_failed] == [("web2", "health")]
    health = [
        e
        for e in events
        if e["type"] == "host.step_finished" and e["step"] == "health" and e["host"] == "web2"
    ]
    assert health and health[0]["exit_code"] != 0 and "500" in health[0]["output_tail"]
    by_host = {h["name"]: h for h in done["hosts"]}
    assert by_host["web2"]["status"] in ("failed", "rolled_back")
    # every host that switched to the failed release went back to the previous one
    rolled = {e["host"] for e in events if e["type"] == "host.rolled_back"}
    assert "web2" in rolled
    for h in hosts:
        assert current_of(h) == f"releases/{first}"
    assert fetch(hosts[0].address, port) == "A"


def test_changed_host_key_is_refused_and_nothing_written(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    register(system, hosts, sample.url, app_port=free_port())
    sample.commit("A")
    hosts[0].rotate_host_key()
    rid = system.release("web", "prod", "main")
    done = system.wait(rid)
    assert done["status"] == "failed"
    events = system.events(rid)
    failed = [e for e in events if e["type"] == "host.failed"]
    assert failed and failed[0]["code"] == "HOST_KEY_MISMATCH"
    assert not (hosts[0].srv_path / "app").exists()
    assert not any(e["type"] == "host.step_started" for e in events)


def test_bad_input_gets_clear_errors(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    register(system, hosts, sample.url, app_port=free_port())
    r = system.post("/api/releases", {"project": "nope", "environment": "prod", "ref": "main"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "project"
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    r = system.post(
        "/api/releases", {"project": "web", "environment": "prod", "ref": f"--upload-pack=touch {marker}"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "ref"
    assert not os.path.exists(marker)
    r = system.post("/api/releases", {"project": "web", "environment": "prod"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "ref"


def test_private_key_is_not_stored_in_clear(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    register(system, hosts, sample.url, app_port=free_port())
    db = (system.settings.home / "ferry.db").read_bytes()
    key = hosts[0].client_key_pem.encode()
    body = [line for line in key.splitlines() if line and not line.startswith(b"-----")]
    assert body
    for line in body:
        assert line not in db
    # nor in any API response
    for path in ("/api/credentials", "/api/credentials/deploy-key", "/api/hosts"):
        assert body[0].decode() not in system.api.get(path).text


def test_same_commit_twice_builds_once_and_uploads_nothing(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(2)
    register(system, hosts, sample.url, app_port=free_port())
    sample.commit("A")
    r1 = system.release("web", "prod", "main")
    first = system.wait(r1)
    r2 = system.release("web", "prod", "main")
    second = system.wait(r2)
    assert first["status"] == second["status"] == "succeeded"
    assert second["artifact"]["digest"] == first["artifact"]["digest"]
    assert second["artifact"]["reused"] is True
    uploads = [e for e in system.events(r2) if e["type"] == "host.step_finished" and e["step"] == "upload"]
    assert len(uploads) == 2
    for e in uploads:
        assert e["detail"].get("transferred") == 0 and e["detail"].get("reused") is True


def test_trust_on_first_use_records_the_key_then_refuses_a_change(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    h = hosts[0]
    port = free_port()
    register(system, hosts, sample.url, app_port=port)
    r = system.api.patch("/api/hosts/web1", json={"host_key": None, "host_key_policy": "tofu"})
    assert r.status_code == 200, r.text
    assert system.api.get("/api/hosts/web1").json()["host_key"] is None
    sample.commit("A")
    first = system.release("web", "prod", "main")
    assert system.wait(first)["status"] == "succeeded"
    recorded = system.api.get("/api/hosts/web1").json()["host_key"]
    assert recorded == h.host_key_line
    h.rotate_host_key()
    sample.commit("B")
    second = system.release("web", "prod", "main")
    done = system.wait(second)
    assert done["status"] == "failed"
    failed = [e for e in system.events(second) if e["type"] == "host.failed"]
    assert failed[0]["code"] == "HOST_KEY_MISMATCH"
    assert system.api.get("/api/hosts/web1").json()["host_key"] == recorded
    assert current_of(h) == f"releases/{first}"
    assert fetch(h.address, port) == "A"


def test_rollback_command_goes_back_to_the_previous_release_without_uploading(
    system: System, sshd_hosts, sample
):
    import subprocess
    import sys

    hosts = sshd_hosts(2)
    port = free_port()
    register(system, hosts, sample.url, app_port=port)
    sample.commit("A")
    first = system.release("web", "prod", "main")
    assert system.wait(first)["status"] == "succeeded"
    sample.commit("B")
    assert system.wait(system.release("web", "prod", "main"))["status"] == "succeeded"
    assert fetch(hosts[0].address, port) == "B"

    ferry = str(Path(sys.executable).parent / "ferry")
    env = dict(os.environ, FERRY_URL=system.url.rstrip("/"), FERRY_WS_URL=system.ws_url)
    done = subprocess.run(
        [ferry, "release", "rollback", "--project", "web", "--env", "prod", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    back = done.stdout.split()[0]
    view = system.wait(back)
    assert view["status"] == "succeeded"
    assert view["commit"] == system.wait(first)["commit"]
    for h in hosts:
        assert fetch(h.address, port) == "A"
        # the hosts still held the first release's directory: they switched straight back to it
        assert current_of(h) == f"releases/{first}"
    uploads = [e for e in system.events(back) if e["type"] == "host.step_finished" and e["step"] == "upload"]
    assert uploads and all(e["detail"]["transferred"] == 0 and e["detail"]["instant"] for e in uploads)
    r = system.post(f"/api/releases/{back}/rollback", {})
    assert r.status_code == 202
    assert system.api.post("/api/releases/nope-0/rollback").status_code == 404


def test_dead_host_and_broken_repository_fail_with_clear_reasons(
    system: System, sshd_hosts, sample, tmp_path
):
    hosts = sshd_hosts(2)
    register(system, hosts, sample.url, app_port=free_port(), concurrency=2)
    sample.commit("A")
    hosts[1].stop()  # web2 is dead: nothing listens any more
    rid = system.release("web", "prod", "main")
    done = system.wait(rid)
    assert done["status"] == "failed"
    failed = [e for e in system.events(rid) if e["type"] == "host.failed"]
    assert [(e["host"], e["code"]) for e in failed] == [("web2", "HOST_UNREACHABLE")]
    assert "web2" in done["reason"]

    r = system.api.patch("/api/projects/web", json={"repo_url": (tmp_path / "missing-repo").as_uri()})
    assert r.status_code == 200, r.text
    rid = system.release("web", "prod", "main")
    done = system.wait(rid, timeout=120)
    assert done["status"] == "failed"
    build_failed = [e for e in system.events(rid) if e["type"] == "build.failed"]
    assert build_failed and build_failed[0]["stage"] == "fetch"
    assert "missing-repo" in build_failed[0]["reason"] or "repository" in build_failed[0]["reason"].lower()


def test_long_step_output_is_kept_whole_in_the_object_store(system: System, sshd_hosts, sample):
    hosts = sshd_hosts(1)
    register(system, hosts, sample.url, app_port=free_port())
    system.api.patch("/api/projects/web", json={"pre_release": "seq 1 5000; echo the-last-line"})
    sample.commit("A")
    rid = system.release("web", "prod", "main")
    assert system.wait(rid)["status"] == "succeeded"
    pre = next(
        e for e in system.events(rid) if e["type"] == "host.step_finished" and e["step"] == "pre_release"
    )
    assert pre["output_tail"].rstrip().endswith("the-last-line") and "\n1\n" not in pre["output_tail"]
    full = system.api.get(f"/api/releases/{rid}/logs/{pre['detail']['log_digest']}")
    assert full.status_code == 200
    lines = full.text.split()
    assert lines[0] == "1" and lines[4999] == "5000" and lines[-1] == "the-last-line"
