"""Issue 9 acceptance: a build hook gets nothing of what the builder holds, and the release builds.

The whole system runs as processes (gateway, builder, agent, notifier on a real nats-server,
SQLite under FERRY_HOME) and releases a real git repository to a real sshd host. The
repository's build hook tries every secret the issue lists: the builder's environment through
/proc/$PPID/environ and /proc/1/environ (and every other /proc entry it can see), the master
key file, the database, the NATS credentials and signing key, and another project's mirror. It
writes whatever it got into leak.txt, which ships with the release, and prints it to its log.
"""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ferry.local.natsserver import NatsServer, free_port
from services.builder.sandbox import Sandbox
from tests.harness.sampleapp import SampleRepo, health_url, make_sample_repo, restart_command
from tests.harness.sshd import SshdHost
from tests.harness.system import System, start_system

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(Sandbox().problem() is not None, reason=str(Sandbox().problem())),
]

CANARY = f"canary-{secrets.token_hex(16)}"  # in every service's environment, the builder's too
OTHER_SECRET = f"other-project-secret-{secrets.token_hex(16)}"

PROBE = r"""#!/bin/sh
# Everything a hostile build step would try. Output: leak.txt (shipped) and stdout (the log).
H="$1"
{
  echo "== whoami: $(id)"
  echo "== /proc/\$PPID/environ ($PPID)"; cat /proc/$PPID/environ
  echo "== /proc/1/environ"; cat /proc/1/environ
  echo "== every environ in /proc"; for f in /proc/[0-9]*/environ; do cat "$f"; echo; done
  echo "== own env"; env
  echo "== key"; cat "$H/secret.key"
  echo "== database"; head -c 8192 "$H/ferry.db"
  echo "== nats"; ls -laR "$H/nats"; find "$H/nats" -type f -exec cat {} +
  echo "== mirrors"; ls -laR "$H/builder/mirrors"
  for m in "$H"/builder/mirrors/*; do
    git -c safe.directory='*' --git-dir="$m" log --all -p | head -c 65536
  done
  echo "== home"; ls -la "$H"; find "$H" -maxdepth 3 -type f -exec cat {} +
  echo "== end"
} > leak.txt 2>&1
cat leak.txt
chmod u+s,g+s run.sh  # a setuid file in the build output
"""


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    s = start_system(tmp_path / "home", nats_url=nats_server.url, extra_env={"FERRY_TEST_CANARY": CANARY})
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


@pytest.fixture
def host(sshd_hosts: Callable[..., list[SshdHost]]) -> SshdHost:
    return sshd_hosts(1)[0]


def hostile_repo(path: Path, home: Path) -> SampleRepo:
    repo = make_sample_repo(path)
    (repo.path / "probe.sh").write_text(PROBE)
    (repo.path / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo.path / "run.sh").chmod(0o755)
    repo.commit("1")
    return repo


def other_repo(path: Path) -> SampleRepo:
    repo = make_sample_repo(path)
    (repo.path / "secret.txt").write_text(OTHER_SECRET + "\n")
    repo.commit("other")
    return repo


def add_project(system: System, name: str, repo_url: str, deploy_path: str, **fields: object) -> None:
    system.post(
        "/api/projects",
        {"name": name, "repo_url": repo_url, "deploy_path": deploy_path, "artifact_format": "zst", **fields},
        201,
    )
    system.post(f"/api/projects/{name}/environments", {"name": "prod", "hosts": ["web1"]}, 201)


def register_host(system: System, host: SshdHost) -> None:
    key = {"name": "deploy-key", "kind": "ssh_key", "secret": host.client_key_pem}
    system.post("/api/credentials", key, 201)
    system.post(
        "/api/hosts",
        {
            "name": "web1",
            "address": host.address,
            "port": host.port,
            "user": "root",
            "credential": "deploy-key",
            "host_key": host.host_key_line,
            "host_key_policy": "pinned",
        },
        201,
    )


def secrets_of(home: Path) -> dict[str, str]:
    """What must not leak: the values themselves, read from the builder's side after the run."""
    found = {"environment canary": CANARY, "other project's mirror": OTHER_SECRET}
    found["secret.key"] = (home / "secret.key").read_text().strip()
    found["database"] = "SQLite format 3"
    for path in sorted((home / "nats").rglob("*")) if (home / "nats").exists() else []:
        if path.is_file() and path.stat().st_size >= 16:
            text = path.read_bytes().decode("utf-8", "replace").strip()
            found[f"nats file {path.relative_to(home)}"] = text[:64]
    return found


def test_a_hostile_build_hook_gets_nothing_and_the_release_builds(
    system: System, host: SshdHost, tmp_path: Path
) -> None:
    home = system.settings.home
    register_host(system, host)
    other = other_repo(tmp_path / "other")
    add_project(system, "other", other.url, "/srv/other")
    first = system.wait(system.release("other", "prod", "main"))
    assert first["status"] == "succeeded", first
    assert list((home / "builder" / "mirrors").iterdir())  # the other project's mirror is on disk

    repo = hostile_repo(tmp_path / "web", home)
    port = free_port()
    add_project(
        system,
        "web",
        repo.url,
        "/srv/app",
        build_hooks=[f"sh probe.sh {home}"],
        restart=restart_command(port),
        health={"kind": "http", "target": health_url(port), "timeout": 2, "retries": 20, "interval": 0.25},
    )
    release_id = system.release("web", "prod", "main")
    done = system.wait(release_id)
    assert done["status"] == "succeeded", [e for e in system.events(release_id) if "failed" in e["type"]]

    shipped = (host.srv_path / "app" / "releases" / release_id / "leak.txt").read_text(errors="replace")
    assert "== end" in shipped  # the probe ran to its end
    assert "uid=" in shipped and "uid=0(" not in shipped  # neither root nor the builder's user
    assert f"{home}/secret.key: No such file or directory" in shipped  # FERRY_HOME is not there at all
    hook_tails = "".join(h["output_tail"] for h in done["build"]["hooks"])
    log = system.api.get(f"/api/releases/{release_id}/logs/{done['build']['log_digest']}")
    assert log.status_code == 200, log.text
    for where, text in {"leak.txt": shipped, "hook events": hook_tails, "build log": log.text}.items():
        for what, value in secrets_of(home).items():
            assert value not in text, f"{what} leaked into {where}"

    run_sh = host.srv_path / "app" / "releases" / release_id / "run.sh"
    mode = run_sh.stat().st_mode
    assert mode & (stat.S_ISUID | stat.S_ISGID) == 0 and mode & stat.S_IXUSR  # executable, not setuid
    assert httpx.get(f"http://{host.address}:{port}/", timeout=5).text.strip() == "1"
