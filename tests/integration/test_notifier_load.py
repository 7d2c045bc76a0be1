"""The notifier under load: 200 clients on one release, a client that resumes, a client that stops reading.

The notifier runs as its own process (``python -m services.notifier``) so that it has a core of its
own and the entry point is what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe, host_of, utcnow
from ferry.domain.release import (
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    ReleaseState,
    RequestRelease,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)
from ferry.local.natsserver import free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 200


def decided(rid: str, commands: list) -> list[Event]:
    state = ReleaseState(rid)
    events: list[Event] = []
    for command in commands:
        for e in decide(state, command, utcnow()):
            state = evolve(state, e)
            events.append(e)
    return events


def release_history(rid: str, hosts: tuple[str, ...] = ("a", "b", "c", "d"), hooks: int = 2) -> list[Event]:
    plan = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=hosts)
    commands: list = [RequestRelease("shop", "prod", "main", "alice", plan), StartBuild("b1")]
    commands.append(RecordSource("c" * 40))
    commands += [RecordHook(i, f"make step{i}", 0, 0.5, f"hook {i} ok") for i in range(hooks)]
    commands.append(RecordArtifact("sha256:" + "d" * 64, 1234, "zst"))
    for host in hosts:
        for step in HOST_STEPS:
            commands.append(StartHostStep(host, step, "agent-1"))
            commands.append(FinishHostStep(host, step, 0, 0.1, f"{step} ok"))
    commands.append(Succeed())
    return decided(rid, commands)


async def append(bus, events: list[Event]) -> int:
    """Append one by one, each stamped with the time it is appended (as a service would)."""
    seq = 0
    for e in events:
        e = e.model_copy(update={"at": utcnow()})
        history = await bus.events.load(e.release_id)
        (seq,) = await bus.events.append(
            [e], expected_seq=history[-1].seq if history else 0, whole_release=True
        )
    return seq


def identity(wire_event: dict) -> tuple[str, str | None, int]:
    """What tells a release's events apart: host events are numbered per host."""
    return wire_event["type"], wire_event.get("host"), wire_event["version"]


@pytest.fixture
def notifier_process(nats_server, tmp_path) -> Iterator:
    """Start ``python -m services.notifier`` with extra environment; yields ``start(**env) -> (ws, http)``."""
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> tuple[str, str]:
        port = free_port()
        log = open(tmp_path / f"notifier-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.notifier"],
            cwd=ROOT,
            env={
                **os.environ,
                "FERRY_NATS_URL": nats_server.url,
                "FERRY_WS_PORT": str(port),
                "FERRY_HOME": str(tmp_path),
                "FERRY_LOG_LEVEL": "WARNING",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        http = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / f"notifier-{port}.log").read_text()
            assert time.monotonic() < deadline, "notifier did not become healthy"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{http}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        return f"ws://127.0.0.1:{port}", http

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def get_metrics(http: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{http}/metrics")).text


class Client:
    """A WebSocket client that records every event frame and can drop and resume once."""

    def __init__(self, url: str, total: int, drop_after: int | None = None) -> None:
        self.url = url
        self.total = total
        self.drop_after = drop_after
        self.frames: list[dict] = []
        self.received_at: dict[int, float] = {}
        self.connected = asyncio.Event()
        self.reconnects = 0

    @property
    def last_seq(self) -> int:
        return self.frames[-1]["seq"] if self.frames else 0

    async def run(self) -> None:
        while len(self.frames) < self.total:
            async with websockets.connect(f"{self.url}?since={self.last_seq}", open_timeout=30) as ws:
                self.connected.set()
                while len(self.frames) < self.total:
                    frame = json.loads(await ws.recv())
                    if frame["kind"] != "event":
                        continue
                    self.frames.append(frame)
                    self.received_at[frame["seq"]] = time.monotonic()
                    if self.drop_after is not None and len(self.frames) == self.drop_after:
                        self.drop_after = None
                        self.reconnects += 1
                        break  # drop the connection midway; resume with the last seq


async def test_200_clients_receive_every_event_exactly_once_in_order(bus, notifier_process):
    ws_url, http = notifier_process(FERRY_WS_HEARTBEAT="1")
    events = release_history("load1")
    assert 55 <= len(events) <= 70
    await append(bus, events[:10])  # before anyone connects
    clients = [Client(f"{ws_url}/ws/releases/load1", len(events)) for _ in range(CLIENTS)]
    clients[7].drop_after = 30
    started = time.monotonic()
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(c.connected.wait() for c in clients))
        connected = time.monotonic() - started
        live_from = time.monotonic()
        sent_at: dict[int, float] = {}
        for e in events[10:]:
            sent_at[await append(bus, [e])] = time.monotonic()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
        done = time.monotonic() - live_from
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    expected = [(e.type, host_of(e), e.version) for e in events]
    for c in clients:
        assert [identity(f["event"]) for f in c.frames] == expected
        seqs = [f["seq"] for f in c.frames]
        assert seqs == sorted(set(seqs))
    assert clients[7].reconnects == 1
    lags = [c.received_at[s] - t for c in clients for s, t in sent_at.items()]
    text = await get_metrics(http)
    latency = metric(text, "ferry_notifier_push_latency_seconds_sum") / metric(
        text, "ferry_notifier_push_latency_seconds_count"
    )
    print(
        f"\n{CLIENTS} clients connected in {connected:.2f}s; {len(events) - 10} live events appended and "
        f"delivered to all in {done:.2f}s; append->receive lag max {max(lags) * 1000:.0f} ms, "
        f"median {sorted(lags)[len(lags) // 2] * 1000:.0f} ms; notifier push latency mean "
        f"{latency * 1000:.1f} ms; pushed {metric(text, 'ferry_notifier_events_pushed_total'):.0f}"
    )
    assert metric(text, "ferry_notifier_resyncs_total") == 0
    # every frame of every connection, plus what reached the dropping client after it stopped reading
    assert 0 <= metric(text, "ferry_notifier_events_pushed_total") - CLIENTS * len(events) <= len(events)


async def test_a_client_that_stops_reading_never_holds_the_others(bus, notifier_process):
    ws_url, http = notifier_process(FERRY_WS_HEARTBEAT="1", FERRY_WS_QUEUE="8")
    url = f"{ws_url}/ws/releases/slow1"
    big = "x" * 200_000  # large outputs fill the slow client's socket buffers quickly
    plan = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a",))
    head = [RequestRelease("shop", "prod", "main", "alice", plan), StartBuild(), RecordSource("c" * 40)]
    events = decided("slow1", head + [RecordHook(i, f"step {i}", 0, 0.1, big) for i in range(80)])

    # The slow client: a small receive buffer, a tiny message queue, and nobody calling recv().
    sock = socket.create_connection(("127.0.0.1", int(ws_url.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow = await websockets.connect(f"{url}?since=0", sock=sock, max_queue=1, max_size=None)
    normal = [Client(url, len(events)) for _ in range(5)]
    tasks = [asyncio.create_task(c.run()) for c in normal]
    sent_at: dict[int, float] = {}
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(c.connected.wait() for c in normal))
        resynced_after = None
        for i, e in enumerate(events):
            sent_at[await append(bus, [e])] = time.monotonic()
            if resynced_after is None and i % 5 == 4:
                text = await get_metrics(http)
                if metric(text, "ferry_notifier_resyncs_total") >= 1:
                    resynced_after = i + 1
                    # the slow one is gone; the five others are still connected, waiting for more
                    assert 'ferry_notifier_clients{channel="release"} 5' in text
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
        assert resynced_after is not None, "the slow client was never told to resync"
        for c in normal:
            assert [f["event"]["version"] for f in c.frames] == list(range(1, len(events) + 1))
        lags = [c.received_at[s] - t for c in normal for s, t in sent_at.items()]
        # Promptly: a bound far above normal (~ms) and far below what waiting on the slow one would cost.
        assert max(lags) < 5.0, f"normal clients lagged {max(lags):.2f}s"
        text = await get_metrics(http)
        assert metric(text, "ferry_notifier_resyncs_total") == 1

        # Reading again, the slow client finds an ordered prefix, then a resync frame or the end.
        # Its tiny window drains the server's buffers slowly, so it reads for a few seconds at most.
        got: list[dict] = []
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(3):
                while True:
                    frame = json.loads(await slow.recv())
                    got.append(frame)
                    if frame["kind"] == "resync":
                        break
        seen = [f for f in got if f["kind"] == "event"]
        assert [f["event"]["version"] for f in seen] == list(range(1, len(seen) + 1))
        assert len(seen) < len(events)
        resync = [f for f in got if f["kind"] == "resync"]
        if resync:
            assert resync[0]["since"] >= seen[-1]["seq"]
        # ... and resuming from its last sequence completes the set.
        again = Client(url, len(events) - len(seen))
        again.frames = []
        async with websockets.connect(f"{url}?since={seen[-1]['seq'] if seen else 0}") as ws:
            async with asyncio.timeout(20):
                while len(again.frames) < len(events) - len(seen):
                    frame = json.loads(await ws.recv())
                    if frame["kind"] == "event":
                        again.frames.append(frame)
        versions = [f["event"]["version"] for f in seen + again.frames]
        assert versions == list(range(1, len(events) + 1))
        print(
            f"\nslow client told to resync after {resynced_after} x 200 KB events; "
            f"5 normal clients max lag {max(lags) * 1000:.0f} ms; slow client had read {len(seen)}"
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(slow.close(), 5)
        slow.transport.abort()
        sock.close()
