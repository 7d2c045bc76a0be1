"""WebSocket fan-out: ferry's notifier against a minimal broadcast relay, same clients, same run.

    python bench/bench_ws.py                         # 1,000 and 5,000 watchers, 1 round
    python bench/bench_ws.py --watchers 1000 --rounds 3 --releases 3 --hosts 3

A real nats-server; the notifier as it runs in production (``python -m services.notifier``, auth
off, migrated SQLite); a minimal relay (``--relay``: an ordered consumer of ``ferry.release.>``,
each event serialised once with the notifier's frame, ``websockets.broadcast``), each in its own
process. Per N and round, N watchers on ``/ws/all`` (``--client-procs`` processes of a minimal
WebSocket client that records arrival times and parses afterwards) connect to one side; then 3
releases x 3 hosts (141 real events decided by ``ferry.release``, hosts stepping concurrently)
are appended, each stamped ``at`` just before; then the other side (alternating who goes first).
Latency: an event's ``at`` to its arrival at each client. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferry.domain import release as rel  # noqa: E402
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe, decode, utcnow  # noqa: E402
from ferry.infra.bus import Bus  # noqa: E402
from ferry.infra.eventstore import EventStore  # noqa: E402

Plan_ = list[list[tuple[float, Event]]]


def raise_fd_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


class Watcher(asyncio.Protocol):
    """One WebSocket client: handshake, then record (arrival time, text payload); answers pings."""

    def __init__(self, host: str, port: int, path: str, expect: int, done: asyncio.Future[None]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.buf, self.open = bytearray(), False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.expect, self.events, self.done = expect, 0, done
        self.frames: list[tuple[float, bytes]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        self.finish()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self.buf[: self.buf.find(b"\r\n")]:
                self.opened.set_exception(ConnectionError(bytes(self.buf[:end]).decode(errors="replace")))
                return
            del self.buf[: end + 4]
            self.open = True
            self.opened.set_result(None)
        buf = self.buf
        while len(buf) >= 2:
            opcode, offset = buf[0] & 0x0F, {126: 4, 127: 10}.get(buf[1] & 0x7F, 2)
            if len(buf) < offset:
                return
            length = buf[1] & 0x7F if offset == 2 else int.from_bytes(buf[2:offset], "big")
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x1:
                self.frames.append((now, payload))
                self.events += payload.count(b'{"kind":"event",')
                if self.events >= self.expect:
                    self.finish()
            elif opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None and len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def run_clients(a: argparse.Namespace) -> dict[str, Any]:
    """Connect ``a.count`` watchers, say READY, wait for GO, then until each has ``a.expect`` events."""
    loop, watchers = asyncio.get_running_loop(), []
    for _ in range(a.count):
        done: asyncio.Future[None] = loop.create_future()
        connect = partial(Watcher, "127.0.0.1", a.port, a.path, a.expect, done)
        _, w = await loop.create_connection(connect, "127.0.0.1", a.port)
        watchers.append(w)
        await asyncio.wait_for(w.opened, 60)
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(w.done for w in watchers)), a.timeout)
    result: dict[str, Any] = {"latency": [], "seqs": []}
    for w in watchers:
        seqs = []
        for arrived, payload in w.frames:
            frame = json.loads(payload)
            if frame["kind"] == "event":
                seqs.append(frame["seq"])
                result["latency"].append(arrived - decode(frame["event"]).at.timestamp())
        result["seqs"].append(seqs)
        if w.transport is not None:
            w.transport.abort()
    return result


def client_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    Path(args.out).write_bytes(pickle.dumps(asyncio.run(run_clients(args))))


async def relay_main(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from ferry.infra.bus import open_bus
    from ferry.infra.eventstore import ALL_EVENTS
    from services.notifier.fanout import event_frame

    bus = await open_bus(args.nats, name="bench-relay", setup=False)
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        await ws.wait_closed()
        clients.discard(ws)

    async with serve(handler, "127.0.0.1", args.port, compression=None, backlog=4096, ping_interval=None):
        print("READY", flush=True)
        head = await bus.events.last_seq()
        async for stored in bus.events.follow(ALL_EVENTS, head + 1):
            broadcast(clients, event_frame(stored.seq, stored.event))


# (low, high) seconds of each step on a small host; a 3-host release takes 4-7 s
STEP_SECONDS = dict(upload=(0.8, 2.0), link=(0.05, 0.1), pre_release=(0.1, 0.4), activate=(0.05, 0.1))
STEP_SECONDS |= dict(restart=(0.3, 1.0), health=(0.2, 0.8), post_release=(0.1, 0.3))


def schedule(rid: str, hosts: int, rng: random.Random, start: float) -> list[tuple[float, Event]]:
    """A release's events with the offset (s) each is appended at; hosts step concurrently."""
    names = tuple(f"h{i}" for i in range(hosts))
    plan = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=names)
    t = start
    timed: list[tuple[float, rel.Command]] = [(t, rel.RequestRelease("shop", "prod", "main", "alice", plan))]
    build: list[rel.Command] = [rel.StartBuild("b1"), rel.RecordSource("c" * 40)]
    build.append(rel.RecordArtifact("sha256:" + "d" * 64, 1, "zst"))
    for command, (low, high) in zip(build, ((0.05, 0.2), (0.3, 1.0), (0.5, 1.5)), strict=True):
        t += rng.uniform(low, high)
        timed.append((t, command))
    ends = []
    for host in names:
        h = t
        for step in HOST_STEPS:
            h += rng.uniform(0.002, 0.02)
            timed.append((h, rel.StartHostStep(host, step, "agent-1")))
            h += rng.uniform(*STEP_SECONDS[step])
            timed.append((h, rel.FinishHostStep(host, step, 0, 0.1, f"{step} ok\n" * 20)))
        ends.append(h)
    timed.append((max(ends) + 0.02, rel.Succeed()))
    timed.sort(key=lambda p: p[0])
    state, out = rel.ReleaseState(rid), []
    for offset, command in timed:
        for e in rel.decide(state, command, utcnow()):
            state = rel.evolve(state, e)
            out.append((offset, e))
    return out


async def append_releases(events: EventStore, plan: list[list[tuple[float, Event]]]) -> list[int]:
    """Append every release's events at their offsets, concurrently; returns the sequences."""
    start = time.monotonic()

    async def one(timeline: list[tuple[float, Event]]) -> list[int]:
        last, seqs = 0, []
        for offset, event in timeline:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            event = event.model_copy(update={"at": utcnow()})
            (last,) = await events.append([event], expected_seq=last, whole_release=True)
            seqs.append(last)
        return seqs

    return sorted(s for seqs in await asyncio.gather(*(one(t) for t in plan)) for s in seqs)


@dataclass
class Outcome:
    latencies: list[float]
    missed: int  # (client, event) pairs never received
    disorder: int  # frames at or below the sequence before them
    clients: int


def ms(values: list[float], p: float) -> float:
    """The ``p``th percentile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(cmd, **kwargs)


async def measure(
    bus: Bus, port: int, path: str, n: int, args: argparse.Namespace, tmp: Path, tag: str, plan: Plan_
) -> Outcome:
    total = sum(len(t) for t in plan)
    per = [n // args.client_procs + (1 if i < n % args.client_procs else 0) for i in range(args.client_procs)]
    procs, outs = [], []
    for i, count in enumerate(c for c in per if c):
        out = tmp / f"{tag}-{i}.pickle"
        outs.append(out)
        cmd = [sys.executable, __file__, "--client", "--port", str(port), "--path", path]
        cmd += ["--count", str(count), "--expect", str(total), "--out", str(out)]
        cmd += ["--timeout", str(args.timeout)]
        procs.append(spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 300)  # type: ignore[union-attr]
            if line.strip() != "READY":
                raise SystemExit(f"client process failed to connect ({tag})")
        for p in procs:
            print("GO", file=p.stdin, flush=True)
        seqs = await append_releases(bus.events, plan)
        for p in procs:
            await asyncio.to_thread(p.wait, args.timeout + 120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    o, want = Outcome([], 0, 0, 0), set(seqs)
    for result in (pickle.loads(out.read_bytes()) for out in outs):
        o.latencies += result["latency"]
        for got in result["seqs"]:
            o.clients += 1
            o.missed += len(want - set(got))
            o.disorder += sum(1 for a, b in zip(got, got[1:], strict=False) if b <= a)
    return o


def start_notifier(nats_url: str, port: int, home: Path, profile: str) -> subprocess.Popen[Any]:
    """``python -m services.notifier`` (WebSockets and webhook deliverer) on a migrated database."""
    from ferry.db.engine import upgrade

    db = f"sqlite:///{home / 'ferry.db'}"
    upgrade(db)  # as ``ferry up`` does: the webhook router reads its routes from it
    env = {**os.environ, "FERRY_NATS_URL": nats_url, "FERRY_WS_PORT": str(port), "FERRY_HOME": str(home)}
    env |= {"FERRY_LOG_LEVEL": "WARNING", "FERRY_AUTH": "off", "FERRY_DATABASE_URL": db}
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    log = open(home / "notifier.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, *prof, "-m", "services.notifier"]
    return spawn(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def wait_listening(port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            (await asyncio.open_connection("127.0.0.1", port))[1].close()
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} (exit code {proc.poll()})")


def summary(args: argparse.Namespace, rows: list[tuple[int, dict[str, list[Outcome]]]]) -> None:
    events = args.releases * (4 + 2 * len(HOST_STEPS) * args.hosts + 1)
    print(f"\n{args.releases} releases x {args.hosts} hosts ({events} events), {args.rounds} round(s)")
    print("p50/p99 in ms: median over rounds; missed, out of order: summed over rounds and clients")
    side = f"{'p50':>9} {'p99':>7} {'missed':>6}"
    print(f"{'watchers':>8} | ferry {side} | relay {side} | {'p50 ratio':>9} {'p99 ratio':>9}")
    for n, got in rows:
        line, mid = f"{n:>8}", {}
        for side in ("ferry", "relay"):
            mid[side] = [median(ms(o.latencies, p) for o in got[side]) for p in (50, 99)]
            bad = sum(o.missed + o.disorder for o in got[side])
            line += f" | {side} {mid[side][0]:9.1f} {mid[side][1]:7.1f} {bad:>6}"
        ratios = [f / r for f, r in zip(mid["ferry"], mid["relay"], strict=True)]
        print(f"{line} | {ratios[0]:9.2f} {ratios[1]:9.2f}")


async def bench(args: argparse.Namespace) -> None:
    from ferry.infra.bus import open_bus
    from ferry.local.natsserver import NatsServer, free_port

    raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    nats = NatsServer(tmp / "nats")
    nats.start()
    procs: list[subprocess.Popen[Any]] = []
    rows: list[tuple[int, dict[str, list[Outcome]]]] = []
    try:
        bus = await open_bus(nats.url, name="bench-ws")
        ports = {"ferry": free_port(), "relay": free_port()}
        procs.append(start_notifier(nats.url, ports["ferry"], tmp, args.profile))
        relay = [sys.executable, __file__, "--relay", "--port", str(ports["relay"]), "--nats", nats.url]
        procs.append(spawn(relay, stdout=subprocess.DEVNULL))
        await wait_listening(ports["ferry"], procs[0], "notifier")
        await wait_listening(ports["relay"], procs[1], "relay")
        rng = random.Random(args.seed)
        for n in args.watchers:
            got: dict[str, list[Outcome]] = {"ferry": [], "relay": []}
            for r in range(args.rounds):
                for side in ("ferry", "relay") if r % 2 == 0 else ("relay", "ferry"):
                    rids = [(f"b{n}x{r}{side[0]}{k}", k * args.stagger) for k in range(args.releases)]
                    plan = [schedule(rid, args.hosts, rng, start) for rid, start in rids]
                    path = f"/ws/all?since={await bus.events.last_seq()}"
                    o = await measure(bus, ports[side], path, n, args, tmp, f"{side}-{n}-{r}", plan)
                    got[side].append(o)
                    p50, p99 = ms(o.latencies, 50), ms(o.latencies, 99)
                    print(f"  N={n} round {r + 1} {side}: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ", end="")
                    print(f"missed {o.missed}  out of order {o.disorder}  clients {o.clients}", flush=True)
            rows.append((n, got))
        await bus.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
            if p.poll() is None:
                p.kill()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary(args, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watchers", type=int, nargs="+", default=[1000, 5000])
    for flag, default in (
        ("--rounds", 1),
        ("--releases", 3),
        ("--hosts", 3),
        ("--client-procs", 2),
        ("--seed", 7),
    ):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between release starts")
    parser.add_argument("--timeout", type=float, default=60.0, help="per phase, after the last append")
    parser.add_argument("--profile", default="", help="write the notifier's cProfile stats to this file")
    for flag in ("--client", "--relay"):  # the bench's own child processes
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag, kind in (("--port", int), ("--count", int), ("--expect", int), ("--path", str)):
        parser.add_argument(flag, type=kind, default=kind(), help=argparse.SUPPRESS)
    for flag in ("--out", "--nats"):
        parser.add_argument(flag, default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
    elif args.relay:
        asyncio.run(relay_main(args))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
