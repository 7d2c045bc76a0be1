"""Event store against a real nats-server: concurrency, history, restart after SIGKILL."""

from __future__ import annotations

import asyncio

import pytest

from ferry.bus import open_bus
from ferry.errors import ConcurrencyError, InvalidInput
from ferry.events import BuildStarted, HostStepStarted, Plan, Recipe, ReleaseRequested, utcnow
from ferry.release import RecordArtifact, RecordSource, RequestRelease, StartBuild, decide, replay

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a", "b"))


def requested(rid: str) -> ReleaseRequested:
    return ReleaseRequested(
        release_id=rid,
        version=1,
        at=utcnow(),
        project="p",
        environment="e",
        ref="main",
        requested_by="alice",
        plan=PLAN,
    )


async def test_append_and_load_in_order(bus):
    seq = await bus.events.append("r1", [requested("r1")], 0)
    seq2 = await bus.events.append("r1", [BuildStarted(release_id="r1", version=2, at=utcnow())], 1)
    history = await bus.events.load("r1")
    assert [e.event.version for e in history] == [1, 2]
    assert [e.seq for e in history] == [seq, seq2]
    assert history[0].event == requested("r1").model_copy(update={"at": history[0].event.at})
    assert await bus.events.load("unknown") == []


async def test_wrong_expected_version_raises(bus):
    await bus.events.append("r2", [requested("r2")], 0)
    with pytest.raises(ConcurrencyError):
        await bus.events.append("r2", [BuildStarted(release_id="r2", version=1, at=utcnow())], 0)
    with pytest.raises(InvalidInput):
        await bus.events.append("r2", [BuildStarted(release_id="r2", version=5, at=utcnow())], 1)


async def test_two_concurrent_writers_exactly_one_wins(bus):
    await bus.events.append("r3", [requested("r3")], 0)

    async def writer(name: str) -> str:
        events = [
            HostStepStarted(release_id="r3", version=2 + i, at=utcnow(), host="a", step=f"{name}-{i}")
            for i in range(5)
        ]
        try:
            await bus.events.append("r3", events, 1)
        except ConcurrencyError:
            return "lost"
        return "won"

    results = await asyncio.gather(writer("x"), writer("y"))
    assert sorted(results) == ["lost", "won"]
    history = await bus.events.load("r3")
    writers = {e.event.step.split("-")[0] for e in history[1:]}  # type: ignore[attr-defined]
    assert len(writers) == 1, "histories interleaved"
    assert [e.event.version for e in history] == list(range(1, len(history) + 1))


async def test_many_races_never_interleave(bus):
    async def writer(rid: str, name: str) -> bool:
        try:
            await bus.events.append(
                rid, [HostStepStarted(release_id=rid, version=2, at=utcnow(), host="a", step=name)], 1
            )
            return True
        except ConcurrencyError:
            return False

    for i in range(20):
        rid = f"race{i}"
        await bus.events.append(rid, [requested(rid)], 0)
        wins = await asyncio.gather(*(writer(rid, f"w{j}") for j in range(4)))
        assert sum(wins) == 1
        assert len(await bus.events.load(rid)) == 2


async def test_retried_append_is_deduplicated(bus):
    ev = requested("r4")
    # the same event appended twice at once (a retry racing its original) is stored once
    results = await asyncio.gather(
        bus.events.append("r4", [ev], 0), bus.events.append("r4", [ev], 0), return_exceptions=True
    )
    assert all(isinstance(r, int | ConcurrencyError) for r in results)
    assert len(await bus.events.load("r4")) == 1


async def test_follow_from_sequence(bus):
    for i in range(3):
        await bus.events.append(f"f{i}", [requested(f"f{i}")], 0)
    seen = []
    async for stored in bus.events.follow(from_seq=2):
        seen.append(stored.event.release_id)
        if len(seen) == 2:
            break
    assert seen == ["f1", "f2"]


async def test_sigkill_and_restart_keeps_history_and_artifact(nats_server, tmp_path):
    bus = await open_bus(nats_server.url, name="t")
    state = replay("k1", [])
    events = decide(
        state, RequestRelease(project="p", environment="e", ref="main", requested_by="a", plan=PLAN), utcnow()
    )
    await bus.events.append("k1", events, 0)
    state = replay("k1", events)
    for cmd in (StartBuild(), RecordSource(commit="a" * 40)):
        new = decide(state, cmd, utcnow())
        await bus.events.append("k1", new, state.version)
        state = replay("k1", [*[e.event for e in await bus.events.load("k1")]])
    blob = tmp_path / "artifact.bin"
    blob.write_bytes(bytes(range(256)) * 20_000)  # ~5 MB, several chunks
    stored = await bus.artifacts.put_file(blob)
    new = decide(state, RecordArtifact(digest=stored.digest, size=stored.size, format="none"), utcnow())
    await bus.events.append("k1", new, state.version)
    before = await bus.events.load("k1")
    await bus.nc.close()

    nats_server.kill()
    nats_server.start()

    bus2 = await open_bus(nats_server.url, name="t2")
    try:
        after = await bus2.events.load("k1")
        assert after == before
        assert await bus2.artifacts.get_bytes(stored.digest) == blob.read_bytes()
        assert replay("k1", [e.event for e in after]).artifact.digest == stored.digest
    finally:
        await bus2.close()


async def test_artifact_put_is_content_addressed(bus, tmp_path):
    f = tmp_path / "a.tar"
    f.write_bytes(b"x" * 300_000)
    first = await bus.artifacts.put_file(f)
    second = await bus.artifacts.put_file(f)
    assert first.stored and not second.stored
    assert first.digest == second.digest
    info = await bus.js.stream_info("OBJ_ferry-artifacts")
    msgs = info.state.messages
    await bus.artifacts.put_file(f)
    assert (await bus.js.stream_info("OBJ_ferry-artifacts")).state.messages == msgs
    out = tmp_path / "out.tar"
    assert await bus.artifacts.get_file(first.digest, out) == 300_000
    assert out.read_bytes() == f.read_bytes()
