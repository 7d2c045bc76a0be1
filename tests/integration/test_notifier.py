"""The notifier against a real nats-server, a real uvicorn and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import uvicorn
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
from ferry.infra.settings import Settings
from ferry.local.natsserver import free_port
from services.notifier.app import NotifierConfig, create_app
from services.notifier.bootstrap import server_config


def release_history(rid: str, project: str = "shop", hosts: tuple[str, ...] = ("a", "b"), hooks: int = 2):
    """A valid, successful release history decided by the real aggregate."""
    plan = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=hosts)
    commands: list = [
        RequestRelease(project, "prod", "main", "alice", plan),
        StartBuild("b1"),
        RecordSource("c" * 40),
    ]
    commands += [RecordHook(i, f"make step{i}", 0, 0.5, f"hook {i} ok") for i in range(hooks)]
    commands.append(RecordArtifact("sha256:" + "d" * 64, 1234, "zst"))
    for host in hosts:
        for step in HOST_STEPS:
            commands += [
                StartHostStep(host, step, "agent-1"),
                FinishHostStep(host, step, 0, 0.1, f"{step} ok"),
            ]
    commands.append(Succeed())
    state = ReleaseState(rid)
    events: list[Event] = []
    for command in commands:
        for e in decide(state, command, utcnow()):
            state = evolve(state, e)
            events.append(e)
    remember_positions(events)
    return events


POSITION: dict[tuple[str, str | None, int], int] = {}
"""(release, host, version) -> position in its release's history: host events are numbered per host."""


def remember_positions(events: list[Event]) -> None:
    for i, e in enumerate(events, start=1):
        POSITION[(e.release_id, host_of(e), e.version)] = i


def position(wire_event: dict) -> int:
    return POSITION[(wire_event["release_id"], wire_event.get("host"), wire_event["version"])]


async def append(bus, events: list[Event]) -> int:
    """Append events one by one (as the services do); returns the last stream sequence."""
    seq = 0
    for e in events:
        history = await bus.events.load(e.release_id)
        (seq,) = await bus.events.append(
            [e], expected_seq=history[-1].seq if history else 0, whole_release=True
        )
    return seq


@contextlib.asynccontextmanager
async def running_notifier(
    nats_url: str, config: NotifierConfig | None = None, ws: str | None = None
) -> AsyncIterator[str]:
    """A real notifier on a free port (its own NATS connection); yields its ws:// base URL.

    ``ws`` swaps the production WebSocket protocol for one of uvicorn's own (no direct writes).
    """
    settings = replace(Settings(), nats_url=nats_url, ws_port=free_port())
    app = create_app(settings, config or NotifierConfig(heartbeat=0.3, first_message_timeout=0.3))
    uvicorn_config = server_config(settings, app)
    if ws is not None:
        uvicorn_config.ws = ws
    server = uvicorn.Server(uvicorn_config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done(), "notifier exited during start-up"
        assert time.monotonic() < deadline, "notifier did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{settings.ws_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def receive_events(ws, count: int, within: float = 10.0) -> list[dict]:
    """The next ``count`` event frames (heartbeats skipped), failing after ``within`` seconds."""
    frames: list[dict] = []
    async with asyncio.timeout(within):
        while len(frames) < count:
            frame = json.loads(await ws.recv())
            if frame["kind"] == "event":
                frames.append(frame)
            else:
                assert frame["kind"] == "heartbeat", frame
    return frames


async def no_more_events(ws, wait: float = 0.8) -> None:
    """Only heartbeats arrive during ``wait`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while True:
                frame = json.loads(await ws.recv())
                assert frame["kind"] == "heartbeat", f"unexpected frame {frame}"


def versions(frames: list[dict]) -> list[int]:
    """Each frame's position in its release's history (1 for the first event)."""
    return [position(f["event"]) for f in frames]


def assert_ordered_once(frames: list[dict]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs)), "frames repeated or out of stream order"


async def test_release_channel_delivers_history_then_live_in_order_exactly_once(bus, nats_server):
    events = release_history("r1")
    other = release_history("r2")
    await append(bus, events[:5] + other[:3])  # before the notifier starts: read from the store
    async with running_notifier(nats_server.url) as url:
        await append(bus, events[5:10])  # in the ring, before the client connects
        async with websockets.connect(f"{url}/ws/releases/r1?since=0") as ws:
            first = await receive_events(ws, 10)
            await append(bus, events[10:] + other[3:6])  # live
            rest = await receive_events(ws, len(events) - 10)
            frames = first + rest
            assert versions(frames) == list(range(1, len(events) + 1))
            assert {f["event"]["release_id"] for f in frames} == {"r1"}
            assert frames[-1]["event"]["type"] == "release.succeeded"
            assert_ordered_once(frames)
            await no_more_events(ws)


async def test_since_resumes_after_a_disconnect_without_gap_or_repeat(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    async with running_notifier(nats_server.url) as url:
        await append(bus, events[:8])
        async with websockets.connect(f"{url}/ws/releases/r1?since=0") as ws:
            before = await receive_events(ws, 8)
        last = before[-1]["seq"]
        await append(bus, events[8:14])  # while the client is away
        async with websockets.connect(f"{url}/ws/releases/r1?since={last}") as ws:
            await append(bus, events[14:])
            after = await receive_events(ws, len(events) - 8)
            await no_more_events(ws)
        frames = before + after
        assert versions(frames) == list(range(1, len(events) + 1))
        assert_ordered_once(frames)
        # resuming from the middle of what it saw repeats nothing before that point
        async with websockets.connect(f"{url}/ws/releases/r1?since={before[3]['seq']}") as ws:
            again = await receive_events(ws, len(events) - 4)
            assert versions(again) == list(range(5, len(events) + 1))


async def test_history_older_than_the_ring_comes_from_the_store(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    config = NotifierConfig(heartbeat=0.3, ring_size=4)
    async with running_notifier(nats_server.url, config) as url:
        await append(bus, events[:12])  # the ring keeps the last 4 of these
        async with websockets.connect(f"{url}/ws/releases/r1?since=0") as ws:
            await append(bus, events[12:])
            frames = await receive_events(ws, len(events))
            assert versions(frames) == list(range(1, len(events) + 1))
            assert_ordered_once(frames)


async def test_project_and_all_channels_filter(bus, nats_server):
    r1, r2, r3 = release_history("r1", "shop"), release_history("r2", "blog"), release_history("r3", "shop")
    await append(bus, r1[:3])  # requested before the notifier starts: the project is looked up
    async with running_notifier(nats_server.url) as url:
        async with (
            websockets.connect(f"{url}/ws/projects/shop?since=0") as shop,
            websockets.connect(f"{url}/ws/projects/blog?since=0") as blog,
            websockets.connect(f"{url}/ws/all?since=0") as everything,
        ):
            for a, b, c in zip(r1[3:], r2, r3, strict=False):
                await append(bus, [a, b, c])
            await append(bus, r2[len(r1) - 3 :] + r3[len(r1) - 3 :])
            total = len(r1) + len(r2) + len(r3)
            shop_frames = await receive_events(shop, len(r1) + len(r3))
            blog_frames = await receive_events(blog, len(r2))
            all_frames = await receive_events(everything, total)
            for frames in (shop_frames, blog_frames, all_frames):
                assert_ordered_once(frames)
            for ws in (shop, blog, everything):
                await no_more_events(ws, 0.3)
            assert {f["event"]["release_id"] for f in shop_frames} == {"r1", "r3"}
            assert {f["event"]["release_id"] for f in blog_frames} == {"r2"}
            by_release = {}
            for f in all_frames:
                by_release.setdefault(f["event"]["release_id"], []).append(position(f["event"]))
            assert by_release == {
                r: list(range(1, len(h) + 1)) for r, h in (("r1", r1), ("r2", r2), ("r3", r3))
            }


async def test_without_since_a_first_message_sets_it_else_live_only(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    async with running_notifier(nats_server.url) as url:
        await append(bus, events[:5])
        async with websockets.connect(f"{url}/ws/releases/r1") as ws:
            await ws.send(json.dumps({"since": 2}))
            frames = await receive_events(ws, 3)
            assert versions(frames) == [3, 4, 5]
        async with websockets.connect(f"{url}/ws/releases/r1") as ws:
            beat = json.loads(await asyncio.wait_for(ws.recv(), 5))  # no message: live from now
            assert beat["kind"] == "heartbeat" and beat["seq"] == frames[-1]["seq"]
            await append(bus, events[5:7])
            assert versions(await receive_events(ws, 2)) == [6, 7]


async def test_heartbeats_carry_the_last_sequence_sent(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    await append(bus, events[:3])
    async with running_notifier(nats_server.url) as url:
        async with websockets.connect(f"{url}/ws/releases/r1?since=0") as ws:
            frames = await receive_events(ws, 3)
            beat = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert beat["kind"] == "heartbeat"
            assert beat["seq"] == frames[-1]["seq"] and beat["ts"] > 0


async def test_bad_requests_are_refused_with_a_close_code(nats_server):
    async with running_notifier(nats_server.url) as url:
        for path in ("/ws/releases/r1?since=-3", "/ws/releases/r1?since=x", "/ws/releases/bad.id?since=0"):
            async with websockets.connect(url + path) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)
                assert info.value.rcvd.code == 4400


async def test_token_protected_notifier_refuses_a_wrong_token(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    await append(bus, events[:2])
    config = NotifierConfig(heartbeat=0.3, token="s3cret")
    async with running_notifier(nats_server.url, config) as url:
        for query in ("since=0", "since=0&token=wrong"):
            async with websockets.connect(f"{url}/ws/releases/r1?{query}") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)
                assert info.value.rcvd.code == 4401
        async with websockets.connect(f"{url}/ws/all?since=0&token=s3cret") as ws:
            assert versions(await receive_events(ws, 2)) == [1, 2]


async def test_healthz_and_metrics(bus, nats_server):
    events = release_history("r1", hosts=("a",))
    async with running_notifier(nats_server.url) as url:
        http = url.replace("ws://", "http://")
        async with websockets.connect(f"{url}/ws/releases/r1?since=0") as ws:
            await append(bus, events[:4])
            await receive_events(ws, 4)
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{http}/healthz")).json() == {"ok": True}
                text = (await client.get(f"{http}/metrics")).text
        assert 'ferry_notifier_clients{channel="release"} 1' in text
        assert "ferry_notifier_events_pushed_total 4" in text
        assert "ferry_notifier_push_latency_seconds_count 4" in text
        assert "ferry_notifier_resyncs_total 0" in text


async def notifier_metrics(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url.replace("ws://", "http://") + "/metrics")).text


@pytest.mark.parametrize("ws", [None, "websockets-sansio"], ids=["direct-writes", "asgi-sends"])
async def test_long_catch_up_then_live_with_and_without_direct_writes(bus, nats_server, ws):
    events = release_history("r1", hosts=("a", "b", "c", "d", "e"))
    assert len(events) > 64  # more history than one catch-up write carries
    config = NotifierConfig(heartbeat=0.3, ring_size=8)
    async with running_notifier(nats_server.url, config, ws=ws) as url:
        await append(bus, events[:-5])  # mostly older than the ring: read from the store
        async with (
            websockets.connect(f"{url}/ws/releases/r1?since=0") as ws1,
            websockets.connect(f"{url}/ws/all?since=0") as ws2,
        ):
            first = [await receive_events(c, len(events) - 5) for c in (ws1, ws2)]
            await append(bus, events[-5:])
            for client, before in zip((ws1, ws2), first, strict=True):
                frames = before + await receive_events(client, 5)
                assert versions(frames) == list(range(1, len(events) + 1))
                assert_ordered_once(frames)
                await no_more_events(client, 0.5)
        text = await notifier_metrics(url)
    assert f"ferry_notifier_events_pushed_total {2 * len(events)}\n" in text
    # live events go straight from the follower to the clients, unless uvicorn's own protocol serves
    direct = re.search(r"^ferry_notifier_events_direct_total (\d+)$", text, re.M)
    assert direct is not None
    assert (int(direct.group(1)) > 0) is (ws is None)
