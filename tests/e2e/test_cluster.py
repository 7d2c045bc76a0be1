"""Issue 11 item 1: ferry on a real 3-node NATS cluster, its events stream's leader SIGKILLed mid-release.

The cluster is ``deploy/nats/cluster.conf`` run three times (routes, JetStream, TLS, ferry's
authorization); the whole system (gateway, builder, agents, notifier as processes) connects to
all three nodes with its streams, buckets and object store at 3 replicas, and releases a real
git repository to real sshd hosts. Once the first host is activated, the node leading
``FERRY_EVENTS`` is SIGKILLed: the release must still succeed with every host activated exactly
once (counted in the stream itself), and no service may have been restarted (their clients
reconnected by themselves). The killed node then comes back with an empty store: it must catch up
to the stream's last sequence, answer a read of the release's history on a connection to it
alone, and be the vote that elects a leader once another node is down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.infra.directget import messages
from ferry.infra.subjects import EVENTS_STREAM, release_filter
from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import register
from tests.harness.cluster import ClusterNode, NatsCluster
from tests.harness.sampleapp import make_sample_repo
from tests.harness.sshd import SshdHost, harness_unavailable_reason
from tests.harness.system import TERMINAL, System, start_system

HOSTS = 3
REPLICAS = 3
CATCH_UP = 30.0


@pytest.fixture
def sshd_required() -> None:
    """This test is an acceptance test: missing sshd hosts fail it instead of skipping it."""
    reason = harness_unavailable_reason()
    if reason is not None:
        pytest.fail(f"the cluster e2e needs real sshd hosts: {reason}")


def history(cluster: NatsCluster, release_id: str, nodes: list[ClusterNode] | None = None) -> list[Any]:
    """The release's events straight from FERRY_EVENTS (direct gets, no consumer): (seq, event)."""

    async def read() -> list[Any]:
        nc = await cluster.connect(nodes)
        try:
            if nodes is not None:  # a connection to these nodes only
                assert nc.connected_url is not None
                assert nc.connected_url.port in {n.port for n in nodes}
            out = []
            async for msg in messages(nc, EVENTS_STREAM, release_filter(release_id)):
                out.append((int((msg.headers or {})["Nats-Sequence"]), json.loads(msg.data)))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def activations(events: list[Any]) -> Counter[str]:
    return Counter(
        e["host"]
        for _seq, e in events
        if e["type"] == "host.step_finished" and e["step"] == "activate" and e["exit_code"] == 0
    )


def wait_first_activation(system: System, cluster: NatsCluster, release_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if activations(history(cluster, release_id)):
            return
        release = system.api.get(f"/api/releases/{release_id}").json()
        assert release["status"] not in TERMINAL, f"ended before any host was activated: {release}"
        time.sleep(0.1)
    raise AssertionError(f"no host activated within 60s\n{system.logs()}")


def assert_replicated(cluster: NatsCluster, expected: set[str]) -> list[str]:
    """Every stream on the cluster (ferry's streams, key-value buckets, object store) has 3 replicas,
    each with a leader and two peers; ``expected`` among them. Returns their names."""
    streams = {s["config"]["name"]: s for s in cluster.streams()}
    assert expected <= set(streams), sorted(streams)
    for name, info in streams.items():
        assert info["config"]["num_replicas"] == REPLICAS, (name, info["config"])
        assert info["cluster"].get("leader"), (name, info["cluster"])
        assert len(info["cluster"].get("replicas") or []) == REPLICAS - 1, (name, info["cluster"])
    return sorted(streams)


def reconnects(system: System) -> int:
    return sum(
        f.read_text(errors="replace").count("reconnected to NATS")
        for f in (system.settings.home / "logs").glob("*.log")
    )


@pytest.mark.sshd
def test_release_survives_killed_stream_leader_and_node_rebuilt_from_empty(
    sshd_required: None,
    tmp_path: Path,
    nats_cluster: NatsCluster,
    sshd_hosts: Callable[..., list[SshdHost]],
) -> None:
    cluster = nats_cluster
    hosts = sshd_hosts(HOSTS)
    system = start_system(tmp_path / "home", nats_url=cluster.url, agents=2, stream_replicas=REPLICAS)
    try:
        assert_replicated(cluster, {EVENTS_STREAM, "FERRY_WORK", "OBJ_ferry-artifacts"})
        pids = {name: proc.pid for name, proc in system.launcher.procs.items()}

        # lead the events stream from the node most services are connected to, so the kill
        # below cuts service connections as well as the leader
        busiest = max(cluster.nodes, key=lambda n: sum(c.startswith("ferry-") for c in n.client_names()))
        cluster.move_leader(EVENTS_STREAM, busiest)

        sample = make_sample_repo(tmp_path / "sample")
        # one host at a time with a pause before each switch: the kill lands between activations
        register(system, hosts, sample.url, app_port=free_port(), concurrency=1, build_hooks=["true"])
        system.api.patch("/api/projects/web", json={"pre_release": "sleep 1"}).raise_for_status()
        sample.commit("on the cluster")
        release_id = system.release("web", "prod", "main")
        wait_first_activation(system, cluster, release_id)

        victim = cluster.leader_of(EVENTS_STREAM)
        on_victim = [n for n in victim.client_names() if n.startswith("ferry-")]
        before = reconnects(system)
        done = activations(history(cluster, release_id))
        assert len(done) < HOSTS, f"every host was activated before the kill: {done}"
        killed_at = time.monotonic()
        victim.kill()
        new_leader = cluster.leader_of(EVENTS_STREAM)
        elected = time.monotonic() - killed_at
        assert new_leader is not victim
        result = system.wait(release_id, timeout=90)
        took = time.monotonic() - killed_at
        assert result["status"] == "succeeded", f"{result}\n{system.logs()}"
        # every stream, bucket and object store the release used, made lazily or not, has 3 replicas
        replicated = assert_replicated(cluster, {"KV_ferry-builds"})
        events = history(cluster, release_id)
        once = activations(events)
        assert once == Counter({f"web{i + 1}": 1 for i in range(HOSTS)}), once
        # no service was restarted: the same processes, all alive, carried on through the kill
        assert {name: proc.pid for name, proc in system.launcher.procs.items()} == pids
        assert all(proc.poll() is None for proc in system.launcher.procs.values())
        assert on_victim, "no service was connected to the killed node"
        assert reconnects(system) - before >= len(on_victim), (on_victim, system.logs())

        # the killed node comes back with nothing on disk, catches up, and serves reads
        victim.restart_empty()
        rebuilt_at = time.monotonic()
        last = cluster.stream_info(EVENTS_STREAM)["state"]["last_seq"]
        deadline = time.monotonic() + CATCH_UP
        state: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            state = victim.stream_state(EVENTS_STREAM)
            if state is not None and state.get("last_seq", 0) >= last:
                break
            time.sleep(0.2)
        assert state is not None and state.get("last_seq", 0) >= last, (state, last)
        caught_up = time.monotonic() - rebuilt_at
        assert history(cluster, release_id, nodes=[victim]) == events

        # and it is a full member again: with another node down, only its vote makes a leader
        second = cluster.leader_of(EVENTS_STREAM)
        if second is victim:
            second = next(n for n in cluster.nodes if n is not victim)
        second.kill()
        assert cluster.leader_of(EVENTS_STREAM) is not second
        assert history(cluster, release_id, nodes=[victim]) == events
        print(
            f"leader {victim.name} killed {took:.1f}s before the release ended; new leader "
            f"{new_leader.name} after {elected:.1f}s; service connections moved: {on_victim}; "
            f"{victim.name} rebuilt from empty to seq {last} in {caught_up:.1f}s; streams at R3: {replicated}"
        )
    finally:
        system.api.close()
        system.launcher.stop()


def test_ferry_up_on_the_cluster(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    """What the issue's new user ran: ``ferry up`` with the three URLs and 3 replicas (was: "services
    not healthy within 60s: agent, builder", its health probe connecting without the cluster's CA)."""
    cluster = nats_cluster
    http_port = free_port()
    env = dict(
        os.environ,
        FERRY_HOME=str(tmp_path / "var"),
        FERRY_NATS_URL=cluster.address,
        FERRY_NATS_CA=str(cluster.ca),
        FERRY_NATS_CREDENTIALS_DIR=str(cluster.credentials_dir),
        FERRY_STREAM_REPLICAS=str(REPLICAS),
        FERRY_HTTP_PORT=str(http_port),
        FERRY_WS_PORT=str(free_port()),
    )
    ferry = Path(sys.executable).parent / "ferry"
    proc = subprocess.Popen(
        [str(ferry), "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    watchdog = threading.Timer(90, proc.kill)  # a launcher that hangs fails the test, bounded
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("portal: ", "error: ")):
                break
        assert lines and lines[-1] == f"portal: http://127.0.0.1:{http_port}/\n", "".join(lines[-20:])
        assert not [line for line in lines if "lost NATS" in line], "".join(lines)  # nothing was lost
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10).status_code == 200
        events = cluster.stream_info(EVENTS_STREAM)
        assert events["config"]["num_replicas"] == REPLICAS and events["cluster"]["leader"], events
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0
