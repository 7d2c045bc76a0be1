"""Agent groups: a host is served only by the agents of its group."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import start_system

pytestmark = [pytest.mark.sshd]


def test_each_host_is_served_by_an_agent_of_its_group(tmp_path: Path, nats_server, sshd_hosts):
    system = start_system(
        tmp_path / "home",
        nats_url=nats_server.url,
        agents=2,
        agent_env={"agent-2": {"FERRY_AGENT_GROUP": "eu"}},
    )
    try:
        hosts = sshd_hosts(2)
        port = free_port()
        sample = make_sample_repo(tmp_path / "sample")
        register(system, hosts, sample.url, app_port=port, concurrency=2)
        r = system.api.patch("/api/hosts/web2", json={"agent_group": "eu"})
        assert r.status_code == 200 and r.json()["agent_group"] == "eu", r.text
        sample.commit("A")
        rid = system.release("web", "prod", "main")
        assert system.wait(rid)["status"] == "succeeded", system.logs()
        started = [e for e in system.events(rid) if e["type"] == "host.step_started"]
        by_host = {h: {e["agent"] for e in started if e["host"] == h} for h in ("web1", "web2")}
        assert by_host == {"web1": {"agent-1"}, "web2": {"agent-2"}}
        for h in hosts:
            assert fetch(h.address, port) == "A"
        log = (system.settings.home / "logs" / "agent-2.log").read_text()
        assert '"agent_group": "eu"' in log
    finally:
        system.api.close()
        system.launcher.stop()
