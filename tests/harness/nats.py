"""pytest fixtures: a real nats-server with JetStream on a free port and a temporary store.

The server authenticates like ferry's own: ``nats_server.url`` carries the ``admin`` identity
(what tests use to look at everything), ``url_for(identity)`` a service's, and
``credentials_dir`` holds every identity's credential (``start_system`` gives each service
its own, found through ``credentials_for``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ferry.infra.bus import Bus, open_bus
from ferry.infra.natsauth import without_userinfo
from ferry.local.natsserver import NatsServer, nats_server_binary

_STARTED: dict[str, Path] = {}
"""Address -> credentials directory of every server these fixtures started."""


def credentials_for(url: str) -> Path | None:
    """The credentials directory of the harness's server at ``url`` (None for another server)."""
    return _STARTED.get(without_userinfo(url).split(",")[0])


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
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = await open_bus(nats_server.url, name="test")
    try:
        yield b
    finally:
        await b.close()
