"""The reconciler against a real nats-server: it walks the index of unfinished releases, so a pass
reads what is open and nothing of the finished history; the orchestrator keeps the index."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import nats.errors
import nats.js.errors
import pytest

from ferry.domain.events import Plan, Recipe
from ferry.domain.release import Cancel, RequestRelease
from ferry.infra import orchestrator
from ferry.infra.bus import Bus, open_bus
from ferry.infra.commands import execute
from ferry.infra.eventstore import StoredEvent
from ferry.infra.natsauth import credential_path
from ferry.infra.openreleases import BUCKET, scan_stream
from ferry.infra.settings import Settings

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a",))


async def _request(bus: Bus, rid: str, environment: str = "prod") -> None:
    await execute(
        bus.histories,
        rid,
        RequestRelease(project="shop", environment=environment, ref="main", requested_by="t", plan=PLAN),
    )


async def _finished(bus: Bus, rid: str) -> None:
    await _request(bus, rid)
    await execute(bus.histories, rid, Cancel(by="t"))


async def _gather(n: int, make) -> None:  # type: ignore[no-untyped-def]
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            await make(i)

    await asyncio.gather(*(one(i) for i in range(n)))


def _count_reads(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every release whose history is read, and every message read by subject or sequence."""
    reads: Counter[str] = Counter()
    load, get_last = bus.events.load, bus.js.get_last_msg

    async def counting_load(release_id: str, after: int = 0, *, legacy: bool = True) -> list[StoredEvent]:
        reads[release_id] += 1
        return await load(release_id, after, legacy=legacy)

    async def counting_get_last(stream: str, subject: str):  # type: ignore[no-untyped-def]
        reads[f"last:{subject}"] += 1
        return await get_last(stream, subject)

    monkeypatch.setattr(bus.events, "load", counting_load)
    monkeypatch.setattr(bus.js, "get_last_msg", counting_get_last)
    return reads


async def test_a_pass_over_200_finished_and_2_open_releases_reads_only_the_2(bus, monkeypatch):
    await _gather(200, lambda i: _finished(bus, f"done-{i}"))
    await _request(bus, "open-1", "prod")
    await _request(bus, "open-2", "test")
    # an installation upgraded from before the index: the bucket is missing, rebuilt once
    await bus.js.delete_key_value(BUCKET)
    bus.open_releases._kv = None
    assert await bus.open_releases.setup(lambda: scan_stream(bus.js)) == 2
    assert await bus.open_releases.ids() == ["open-1", "open-2"]
    assert await bus.open_releases.setup(lambda: scan_stream(bus.js)) == 0, "rebuilt once only"

    reads = _count_reads(bus, monkeypatch)
    memo: orchestrator.Memo = {}
    before = bus.nc.stats["in_msgs"]
    done = await orchestrator.reconcile(bus, memo=memo)
    received = bus.nc.stats["in_msgs"] - before
    assert sorted(done.releases) == ["open-1", "open-2"] and done.closed == []
    assert set(reads) == {"open-1", "open-2"}, "no finished release is read"
    # every message the connection received in the pass (index, locks, histories, work acks):
    # a handful per open release, never one per finished release
    assert received < 60, received

    # the next pass finds both as they were (their subjects' counts): it reads no history at all
    reads.clear()
    again = await orchestrator.reconcile(bus, memo=memo)
    assert sorted(again.releases) == ["open-1", "open-2"] and not reads
    await execute(bus.histories, "open-2", Cancel(by="t"))  # one of them moves on: read again
    last = await orchestrator.reconcile(bus, memo=memo)
    assert (last.releases, last.closed, set(reads)) == (["open-1"], ["open-2"], {"open-2"})


async def test_the_orchestrator_keeps_the_index_as_releases_begin_and_end(bus):
    stop = asyncio.Event()
    running = asyncio.create_task(orchestrator.run(bus, stop, reconcile_every=3600))
    try:
        await _request(bus, "r1")
        await _until(lambda ids: ids == ["r1"], bus)
        await execute(bus.histories, "r1", Cancel(by="t"))
        await _until(lambda ids: ids == [], bus)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)


async def test_a_finished_release_left_in_the_index_is_dropped_by_the_next_pass(bus):
    await _finished(bus, "late")
    await bus.open_releases.add("late")  # e.g. a redelivered request noted after its end
    await bus.open_releases.remove("missing")  # removing what is not there is fine
    done = await orchestrator.reconcile(bus)
    assert (done.releases, done.closed) == ([], ["late"])
    assert await bus.open_releases.ids() == []
    info = await bus.js.stream_info(f"KV_{BUCKET}")
    assert info.state.messages <= 1, "purged: no delete marker per finished release"
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await (await bus.open_releases.kv()).get("late")


async def _until(check, bus: Bus, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while True:
        ids = await bus.open_releases.ids()
        if check(ids):
            return
        assert time.monotonic() < deadline, f"index is {ids}"
        await asyncio.sleep(0.05)


async def test_the_gateway_identity_keeps_the_index_and_the_others_cannot_touch_it(nats_server, tmp_path):
    def settings(identity: str) -> Settings:
        return Settings(home=tmp_path, nats_creds=credential_path(nats_server.credentials_dir, identity))

    gateway = await open_bus(nats_server.address, name="gw", settings=settings("gateway"))
    agent = await open_bus(nats_server.address, name="agent", settings=settings("agent"))
    try:
        await _request(gateway, "g1")  # the bucket was made (and rebuilt: empty) by the gateway's setup
        await gateway.open_releases.note("g1", "release.requested")
        assert await gateway.open_releases.ids() == ["g1"]
        # the server drops what the agent identity may not send: no answer, and nothing written
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await asyncio.wait_for(agent.open_releases.add("forged"), 3)
        assert await gateway.open_releases.ids() == ["g1"]
        await gateway.open_releases.note("g1", "release.cancelled")
        assert await gateway.open_releases.ids() == []
    finally:
        await agent.close()
        await gateway.close()
