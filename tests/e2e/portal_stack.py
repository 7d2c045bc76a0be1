"""The system behind the release page in the browser tests, as the `stack` fixture.

Real nats-server, the real gateway and notifier under uvicorn, a migrated SQLite database.
Nothing schedules work (``background=False``), so a test appends the events a builder and
agents would append, decided by the release aggregate, and reads the diagram's model through
the page.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

from ferry.db.engine import upgrade
from ferry.domain.release import RecordArtifact, RecordHook, RecordSource, StartBuild, decide, evolve, replay
from ferry.infra.bus import Bus, open_bus
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from services.gateway.app import create_app as create_gateway
from services.notifier.app import create_app as create_notifier
from services.notifier.bootstrap import server_config
from tests.harness.history import append_next
from tests.integration.api_harness import project_body, ssh_keypair

COMMIT = "3f2a9c1e" * 5
DIGEST = "ab" * 32


class ServerThread:
    """uvicorn serving an app in a thread until ``stop()``."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def start(self, within: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + within
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 15)


@dataclass
class Stack:
    url: str
    api: httpx.AsyncClient
    bus: Bus
    settings: Settings
    notifier: ServerThread

    async def restart_notifier(self) -> None:
        self.notifier = await ServerThread(
            server_config(self.settings, create_notifier(self.settings))
        ).start()

    async def seed(self, hosts: int, project: str = "shop", approval: bool = False) -> list[str]:
        private, public = ssh_keypair()
        await self.ok("/api/credentials", {"name": "key", "kind": "ssh_key", "secret": private}, 201)
        names = [f"web{i:02d}" if hosts > 9 else f"web{i}" for i in range(hosts)]
        for i, name in enumerate(names):
            body = {"name": name, "address": f"127.0.1.{i + 2}", "credential": "key", "host_key": public}
            await self.ok("/api/hosts", body, 201)
        await self.ok("/api/projects", project_body(project, build_hooks=["make build"]), 201)
        env = {"name": "prod", "hosts": names, "concurrency": 4, "require_approval": approval}
        await self.ok(f"/api/projects/{project}/environments", env, 201)
        return names

    async def ok(self, path: str, body: dict[str, Any], status: int) -> Any:
        r = await self.api.post(path, json=body)
        assert r.status_code == status, f"POST {path}: {r.status_code} {r.text}"
        return r.json()

    async def release(self, project: str = "shop", ref: str = "main") -> str:
        body = await self.ok(
            "/api/releases",
            {"project": project, "environment": "prod", "ref": ref, "requested_by": "dev"},
            202,
        )
        return str(body["id"])

    async def do(self, release_id: str, *commands: Any) -> int:
        """Append what the aggregate decides for each command; returns the last stream sequence."""
        history = await self.bus.events.load(release_id)
        state = replay(release_id, [s.event for s in history])
        seq = history[-1].seq
        for command in commands:
            events = decide(state, command, datetime.now(UTC))
            seq = await append_next(self.bus.events, events)
            for e in events:
                state = evolve(state, e)
        return seq

    async def store_log(self, text: str) -> str:
        return (await self.bus.artifacts.put_bytes(text.encode())).digest

    async def build(self, release_id: str) -> int:
        log = await self.store_log("$ make build\ncompiling 42 files\nbuild ok\n")
        return await self.do(
            release_id,
            StartBuild("builder-1"),
            RecordSource(COMMIT, 0.35),
            RecordHook(0, "make build", 0, 1.5, "compiling 42 files\nbuild ok\n"),
            RecordArtifact(DIGEST, 3_456_789, "zst", log_digest=log, duration=0.8),
        )


@pytest.fixture
async def stack(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Stack]:
    db_url = f"sqlite:///{tmp_path / 'ferry.db'}"
    await asyncio.to_thread(upgrade, db_url)
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=db_url,
        http_port=free_port(),
        ws_port=free_port(),
        secret_key=Fernet.generate_key().decode(),
    )
    gateway = ServerThread(
        uvicorn.Config(
            create_gateway(settings, background=False),
            host="127.0.0.1",
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    notifier = ServerThread(server_config(settings, create_notifier(settings)))
    await gateway.start()
    stack: Stack | None = None
    try:
        await notifier.start()
        bus = await open_bus(nats_server.url, name="e2e-driver")
        url = f"http://127.0.0.1:{settings.http_port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                stack = Stack(url, client, bus, settings, notifier)
                yield stack
        finally:
            await bus.close()
    finally:
        await (stack.notifier if stack else notifier).stop()
        await gateway.stop()


def step_nodes(host: str, step: str) -> str:
    return f"host:{host}:{step}"


async def pulsing(page: Any, key: str) -> bool:
    """Whether the node's outline changes colour over a second (the running pulse)."""
    seen = set()
    for _ in range(10):
        seen.add(
            await page.evaluate(
                "(k) => window.ferryDiagram.findPartForKey(k).findObject('SHAPE').stroke", key
            )
        )
        await asyncio.sleep(0.1)
    return len(seen) > 2
