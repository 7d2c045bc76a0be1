"""The world of the webhook delivery tests, as the `receiver` and `world` fixtures.

A real HTTP receiver in a thread, release histories appended to nats-server, waits on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from ferry.db import repo
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe, utcnow
from ferry.domain.release import (
    Fail,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    ReleaseState,
    RequestRelease,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)
from ferry.infra.bus import WORK_STREAM, Bus
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.secrets import SecretBox
from services.notifier import webhooks as deliverer
from services.notifier.webhooks import ROUTER, SENDER, WebhookConfig
from tests.harness.history import append_next

FAST = (0.05, 0.05, 0.05, 0.05, 0.05)  # six attempts within a fraction of a second
DEADLINE = 30.0


# --- a real HTTP receiver -----------------------------------------------------------------
@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    plans: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def answer(self, path: str) -> int:
        with self.lock:
            planned = self.plans.get(path)
            if planned:
                return planned.pop(0)
            return self.always.get(path, 200)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            status = rec.answer(parts.path)
            with rec.lock:
                rec.requests.append(
                    Received(parts.path, parts.query, dict(self.headers.items()), data, status)
                )
            payload = b'{"ok":true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- helpers ---------------------------------------------------------------------------------
def history(rid: str, project: str, *, fail: bool = False) -> list[Event]:
    plan = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("web1",))
    commands: list = [
        RequestRelease(project, "prod", "main", "alice", plan),
        StartBuild("b1"),
        RecordSource("c" * 40),
        RecordArtifact("sha256:" + "d" * 64, 1234, "zst"),
    ]
    if fail:
        commands += [
            StartHostStep("web1", "upload", "a1"),
            FinishHostStep("web1", "upload", 1, 0.1, "disk full"),
            FailHost("web1", "upload", "upload exited 1"),
            Fail("host web1 failed at upload"),
        ]
    else:
        for step in HOST_STEPS:
            commands += [StartHostStep("web1", step, "a1"), FinishHostStep("web1", step, 0, 0.1, "ok")]
        commands.append(Succeed())
    state = ReleaseState(rid)
    events: list[Event] = []
    for command in commands:
        for e in decide(state, command, utcnow()):
            state = evolve(state, e)
            events.append(e)
    return events


async def append(bus: Bus, events: list[Event]) -> dict[str, int]:
    """Append one by one, as the services do; returns each event type's last stream sequence."""
    seqs: dict[str, int] = {}
    for e in events:
        seqs[e.type] = await append_next(bus.events, [e])
    return seqs


async def until(check: Callable[[], bool], what: str, limit: float = DEADLINE) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def consumers_exist(bus: Bus) -> None:
    deadline = time.monotonic() + DEADLINE
    for stream, durable in ((EVENTS_STREAM, ROUTER), (WORK_STREAM, SENDER)):
        while True:
            try:
                await bus.js.consumer_info(stream, durable)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def settled(bus: Bus) -> None:
    """Every event routed and every work item acked or given up (nothing pending anywhere)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        infos = [
            await bus.js.consumer_info(EVENTS_STREAM, ROUTER),
            await bus.js.consumer_info(WORK_STREAM, SENDER),
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {infos}")
        await asyncio.sleep(0.05)


@dataclass
class World:
    bus: Bus
    sessions: object
    box: SecretBox
    receiver: Receiver

    def add(self, name: str, path: str, **kw: object) -> repo.WebhookInfo:
        kw.setdefault("kind", "generic")
        with self.sessions() as s, s.begin():  # type: ignore[operator]
            return repo.create_webhook(s, self.box, name, self.receiver.url(path), **kw)  # type: ignore[arg-type]

    def deliveries(self, name: str) -> list[repo.WebhookDeliveryInfo]:
        with self.sessions() as s:  # type: ignore[operator]
            return repo.list_webhook_deliveries(s, name)

    @contextlib.asynccontextmanager
    async def running(self, config: WebhookConfig | None = None) -> AsyncIterator[None]:
        stop = asyncio.Event()
        config = config or WebhookConfig(retry_delays=FAST, public_url="https://ferry.example")
        task = asyncio.create_task(deliverer.run(self.bus, self.sessions, self.box, stop, config))  # type: ignore[arg-type]
        try:
            await consumers_exist(self.bus)
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


@pytest.fixture
def world(bus: Bus, session_factory, receiver: Receiver) -> World:
    with session_factory() as s, s.begin():  # a webhook may only name a project that exists
        for name in ("shop", "nope"):
            repo.create_project(
                s, name, f"https://git.example.com/{name}.git", {"deploy_path": f"/srv/{name}"}
            )
    return World(bus, session_factory, SecretBox(Fernet.generate_key()), receiver)
