"""services.agent.remote's restart and services.agent.health against a real OpenSSH host running the sample
app.
"""

# ruff: noqa: F401, F811  (the `host`, `session` fixtures are imported by name)

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from ferry.domain.errors import InvalidInput
from services.agent import remote
from services.agent.health import health_check
from tests.harness.sampleapp import health_url, make_sample_repo, restart_command
from tests.integration.remote_harness import DP, Artifact, host, release, session, srv, wait_until

pytestmark = pytest.mark.sshd


# --- restart and health, with the sample app ------------------------------------------
def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def test_release_the_sample_app_check_health_and_roll_back(host, session, tmp_path):
    repo = make_sample_repo(tmp_path / "repo")
    v1, v2 = repo.commit("1.0.0"), repo.commit("2.0.0", fail_health=True)
    artifacts = {rid: Artifact({}, "none", data=repo.archive(sha)) for rid, sha in (("r1", v1), ("r2", v2))}
    good = artifacts["r1"]
    port = free_port(host.address)
    page = f"http://{host.address}:{port}/"

    release(session, "r1", good)
    assert remote.link_shared(session, DP, "r1", [], ["log"]).ok
    assert remote.activate(session, DP, "r1").ok
    restarted = remote.restart(session, DP, restart_command(port), timeout=20)
    assert restarted.ok, restarted.output
    healthy = health_check(session, DP, url=health_url(port), timeout=2, retries=50, delay=0.1)
    assert healthy.ok, healthy.output + (srv(host) / "shared/sampleapp.log").read_text()
    assert healthy.detail["attempts"][-1]["passed"] is True
    assert httpx.get(page, trust_env=False).text == "1.0.0\n"
    pid_v1 = int((srv(host) / "shared/sampleapp.pid").read_text())

    release(session, "r2", artifacts["r2"])
    assert remote.activate(session, DP, "r2").detail["previous"] == "r1"
    assert remote.restart(session, DP, restart_command(port), timeout=20).ok
    sick = health_check(session, DP, url=health_url(port), timeout=2, retries=3, delay=0.1)
    assert sick.exit_code != 0
    assert "HTTP 500" in sick.output and "failed after" in sick.output
    assert all(not a["passed"] for a in sick.detail["attempts"])
    # The restart stopped the previous instance (a zombie has no namespace links left).
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid_v1}/ns/mnt"))

    back = remote.rollback(session, DP, "r1")
    assert back.detail["previous"] == "r2"
    assert remote.restart(session, DP, restart_command(port), timeout=20).ok
    assert health_check(session, DP, url=health_url(port), timeout=2, retries=50, delay=0.1).ok
    assert httpx.get(page, trust_env=False).text == "1.0.0\n"

    by_command = health_check(session, DP, command='grep -q 1.0.0 VERSION && test -n "$FERRY_RELEASE_ID"')
    assert by_command.ok, by_command.output
    failing = health_check(session, DP, command="echo not yet; exit 7", retries=2, delay=0.05, timeout=5)
    assert failing.exit_code == 1
    assert "attempt 3/3" in failing.output and "exit 7: not yet" in failing.output

    app_pid = int((srv(host) / "shared/sampleapp.pid").read_text())
    assert app_pid in host.leftover_pids()
    host.stop()
    assert host.leftover_pids() == []
    assert wait_until(lambda: not os.path.exists(f"/proc/{app_pid}/ns/mnt"))


def test_health_check_against_nothing_listening_exhausts_retries(host, session):
    port = free_port(host.address)
    started = time.monotonic()
    result = health_check(session, DP, url=health_url(port), timeout=1, retries=3, delay=0.05)
    assert result.exit_code == 1
    assert len(result.detail["attempts"]) == 4
    assert "ConnectError" in result.output
    assert time.monotonic() - started < 5
    with pytest.raises(InvalidInput):
        health_check(session, DP, url="ftp://{address}/", retries=0)
    with pytest.raises(InvalidInput):
        health_check(session, DP)


def test_restart_without_a_live_release_fails_clearly(session):
    result = remote.restart(session, DP, "true", timeout=10)
    assert result.exit_code != 0 and "nothing to restart" in result.output
