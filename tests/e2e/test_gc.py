"""Issue 11, item 4: after 30 releases with ``keep_releases: 3`` the object store, the host's
artifact cache and the agent's own hold exactly what the kept releases need, and a rollback to
each kept release still works."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ferry.infra.bus import open_bus
from tests.harness.system import start_system

pytestmark = [pytest.mark.sshd]

RELEASES = 30
KEEP = 3


async def stored_objects(nats_url: str) -> set[str]:
    bus = await open_bus(nats_url, name="test-gc", setup=False)
    try:
        return {i.name for i in await bus.artifacts.os.list(ignore_deletes=True) if not i.deleted}
    finally:
        await bus.close()


def host_cache(host) -> set[str]:
    return {p.name.split(".")[0] for p in (host.srv_path / "app" / ".ferry" / "artifacts").iterdir()}


def agent_cache(home: Path) -> set[str]:
    return {p.name.split(".")[0] for p in home.glob("agent-cache/*/*") if not p.name.endswith(".part")}


def log_digests(s, ids: list[str]) -> set[str]:
    found = set()
    for rid in ids:
        for e in s.events(rid):
            if e["type"] == "build.artifact_packaged" and e.get("log_digest"):
                found.add(e["log_digest"])
            elif e["type"] == "host.step_finished" and e["detail"].get("log_digest"):
                found.add(e["detail"]["log_digest"])
    return found


def test_gc_keeps_exactly_what_kept_releases_need(tmp_path: Path, nats_server, sshd_hosts, git_repos):
    (host,) = sshd_hosts(1)
    repo = git_repos.create("tiny", {"index.html": "0\n"})
    system = start_system(
        tmp_path / "home",
        nats_url=nats_server.url,
        # the gateway's own loop collects every second while the releases run
        extra_env={"FERRY_GC_GRACE": "0", "FERRY_GC_INTERVAL": "1"},
    )
    try:
        s = system
        s.post("/api/credentials", {"name": "k", "kind": "ssh_key", "secret": host.client_key_pem}, 201)
        s.post(
            "/api/hosts",
            {
                "name": "h1",
                "address": host.address,
                "port": host.port,
                "user": "root",
                "credential": "k",
                "host_key": host.host_key_line,
                "host_key_policy": "pinned",
            },
            201,
        )
        s.post(
            "/api/projects",
            {"name": "tiny", "repo_url": repo.url, "deploy_path": "/srv/app", "keep_releases": KEEP},
            201,
        )
        s.post("/api/projects/tiny/environments", {"name": "prod", "hosts": ["h1"]}, 201)

        started = time.monotonic()
        ids, digests = [], {}
        for i in range(RELEASES):
            repo.commit({"index.html": f"{i + 1}\n"}, f"v{i + 1}")
            rid = s.release("tiny", "prod", "main")
            view = s.wait(rid, timeout=60)
            assert view["status"] == "succeeded", view
            ids.append(rid)
            digests[rid] = view["artifact"]["digest"]
        took = time.monotonic() - started
        assert len(set(digests.values())) == RELEASES, "every commit made its own artifact"

        kept_ids = ids[-KEEP:]
        kept = {digests[r] for r in kept_ids}
        deadline = time.monotonic() + 15
        while (after := asyncio.run(stored_objects(nats_server.url))) & set(digests.values()) != kept:
            assert time.monotonic() < deadline, f"the gateway's loop left {len(after)} objects"
            time.sleep(0.5)
        assert "gc pass" in (s.settings.home / "logs" / "gateway.log").read_text()
        logs = log_digests(s, ids)
        assert after - kept == logs, "the logs the history points to stay; nothing else does"
        assert host_cache(host) == kept, "the host caches only the kept releases' archives"
        deadline = time.monotonic() + 15
        while (local := agent_cache(s.settings.home)) != kept:  # the agent sweeps every second too
            assert time.monotonic() < deadline, f"the agent's cache holds {sorted(local)}"
            time.sleep(0.5)
        assert sorted(p.name for p in (host.srv_path / "app" / "releases").iterdir()) == sorted(kept_ids)
        report = s.post("/api/gc", {}, 200).json()
        assert report["removed"] == 0 and report["kept_artifacts"] == KEEP, "nothing more to collect"

        # a rollback to each kept release still works (the newest is live: roll back to the others)
        for target in reversed(kept_ids[:-1]):
            back = s.post(f"/api/releases/{target}/rollback", {}, 202).json()["id"]
            view = s.wait(back, timeout=60)
            assert view["status"] == "succeeded", view
            assert (host.srv_path / "app" / "current").resolve().name == target
            served = (host.srv_path / "app" / "current" / "index.html").read_text()
            assert served == f"{ids.index(target) + 1}\n"
        print(f"{RELEASES} releases in {took:.1f}s; gc pass {report['duration']}s")
    finally:
        system.api.close()
        system.launcher.stop()
