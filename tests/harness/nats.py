"""pytest fixtures: a real nats-server with JetStream on a free port and a temporary store."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ferry.bus import Bus, open_bus
from ferry.natsserver import NatsServer, nats_server_binary


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
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "nats", ignore_errors=True)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = await open_bus(nats_server.url, name="test")
    try:
        yield b
    finally:
        await b.close()
