"""Issue 7 acceptance: one release to 20 real sshd hosts through the whole system (API, builder,
agents, notifier as processes): it succeeds, every host is activated exactly once, no handler
crashed, and the events stream ends with as many JetStream consumers as it started with."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from ferry.local.natsserver import NatsServer, free_port
from tests.e2e.test_pipeline import current_of, fetch, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.sshd import SshdHost
from tests.harness.system import TERMINAL, System

pytestmark = [pytest.mark.sshd]

HOSTS = 20
EVENTS_STREAM = "FERRY_EVENTS"
# What a crashed or restarted handler leaves in FERRY_HOME/logs (JSON lines from ferry.infra.logs, plus
# anything a process printed to stderr outside the logging setup, e.g. an uncaught traceback).
CRASH_MARKS = ("Traceback", "failed; restarting", "handler crashed", "maximum consumers", "ERROR")


def events_consumers(url: str) -> int:
    """Consumers on the events stream, from the JetStream API (stream info)."""

    async def count() -> int:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return (await nc.jetstream().stream_info(EVENTS_STREAM)).state.consumer_count
        finally:
            await nc.close()

    return asyncio.run(count())


def crash_lines(logs: Path) -> list[str]:
    found = []
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            level = record.get("level") if isinstance(record, dict) else None
            if level in ("error", "critical") or any(mark in line for mark in CRASH_MARKS):
                found.append(f"{path.name}: {line[:600]}")
    return found


def test_release_to_twenty_hosts_activates_each_once_and_crashes_nothing(
    system: System, nats_server: NatsServer, sshd_hosts: Callable[..., list[SshdHost]], tmp_path: Path
) -> None:
    hosts = sshd_hosts(HOSTS)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=port, concurrency=10)
    sample.commit("A")
    before = events_consumers(nats_server.url)

    rid = system.release("web", "prod", "main")
    peak, view = before, {}
    deadline = time.monotonic() + 120
    while True:  # poll the release, counting the stream's consumers while it runs
        peak = max(peak, events_consumers(nats_server.url))
        r = system.api.get(f"/api/releases/{rid}")
        assert r.status_code == 200, f"GET /api/releases/{rid}: {r.status_code} {r.text}"
        view = r.json()
        if view["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, f"not finished after 120 s: {view['status']}\n{system.logs()}"
        system.launcher.check_children()
        time.sleep(0.2)  # the poll interval, bounded by the deadline above

    events = system.events(rid)
    failed = [e for e in events if e["type"] in ("host.failed", "build.failed", "release.failed")]
    assert view["status"] == "succeeded", f"{view.get('reason')}: {failed}\n{system.logs()}"
    activations = Counter(
        e["host"]
        for e in events
        if e["type"] == "host.step_finished" and e["step"] == "activate" and e["exit_code"] == 0
    )
    assert activations == {f"web{i + 1}": 1 for i in range(HOSTS)}
    assert [h["status"] for h in view["hosts"]] == ["succeeded"] * HOSTS
    for h in hosts:
        assert current_of(h) == f"releases/{rid}"
        assert fetch(h.address, port) == "A"

    system.launcher.check_children()  # every service still runs
    assert crash_lines(system.settings.home / "logs") == []
    after = events_consumers(nats_server.url)
    assert after == before, f"consumers on {EVENTS_STREAM}: {before} before, {after} after"
    assert peak == before, f"consumers on {EVENTS_STREAM}: {before} before, {peak} during the release"
    assert before <= 10  # a small constant: a few per service, whatever the hosts or events
