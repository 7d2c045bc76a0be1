"""``ferry up``'s health probe on the 3-node TLS cluster: it connects as the services do.

Before, it dialled the cluster without the CA of its ``tls://`` servers and never heard builder
and agents ("services not healthy within 60s: agent, builder"); now it trusts FERRY_NATS_CA,
and without it says why instead of waiting in silence.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from nats.aio.msg import Msg

from ferry.local.healthprobe import CONNECT_TIMEOUT, HealthProbe
from tests.harness.cluster import NatsCluster


@pytest.fixture
def builder_answering(nats_cluster: NatsCluster) -> Iterator[None]:
    """A responder on ``ferry.health.builder`` (as the builder's) on the third node, in a thread."""
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        nc = await nats_cluster.connect([nats_cluster.nodes[-1]])

        async def reply(msg: Msg) -> None:
            await msg.respond(json.dumps({"service": "builder", "ok": True}).encode())

        await nc.subscribe("ferry.health.builder", cb=reply)
        await nc.flush()
        ready.set()
        await asyncio.to_thread(stop.wait, 30)
        await nc.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the responder did not start"
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_probe_reaches_a_worker_on_the_tls_cluster(
    nats_cluster: NatsCluster, builder_answering: None
) -> None:
    probe = HealthProbe(nats_cluster.address, nats_cluster.credentials["gateway"], nats_cluster.ca)
    try:
        deadline = time.monotonic() + 10
        healthy: set[str] = set()
        while time.monotonic() < deadline and not healthy:
            healthy = probe.healthy(("builder",))  # the answer's interest may take a moment to route
        assert healthy == {"builder"}, probe.error
        assert probe.error is None
        assert probe.healthy(("agent",)) == set()  # nobody answers for agents
    finally:
        probe.close()


def test_probe_without_the_ca_says_why_within_its_bound(nats_cluster: NatsCluster) -> None:
    probe = HealthProbe(nats_cluster.address, nats_cluster.credentials["gateway"], None)
    try:
        started = time.monotonic()
        assert probe.healthy(("builder", "agent")) == set()
        assert time.monotonic() - started < CONNECT_TIMEOUT + 2
        assert probe.error is not None and "CERTIFICATE_VERIFY_FAILED" in probe.error, probe.error
    finally:
        probe.close()
