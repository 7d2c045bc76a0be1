"""ferry.infra.commands against a real nats-server: concurrent writers all land, none interleave, reads
cost what they read."""

from __future__ import annotations

import asyncio

import pytest

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import HostStepStarted, Plan, Recipe, utcnow
from ferry.domain.release import (
    Cancel,
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    RequestRelease,
    StartBuild,
    StartHostStep,
)
from ferry.infra.bus import open_bus
from ferry.infra.commands import Histories, execute
from ferry.infra.eventstore import EVENTS_STREAM

HOSTS = tuple(f"h{i}" for i in range(8))
PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=HOSTS, concurrency=8)


async def _built(histories: Histories, rid: str) -> None:
    await execute(
        histories, rid, RequestRelease(project="p", environment="e", ref="main", requested_by="a", plan=PLAN)
    )
    for command in (
        StartBuild(),
        RecordSource(commit="a" * 40),
        RecordArtifact(digest="b" * 64, size=1, format="zst"),
    ):
        await execute(histories, rid, command)


async def test_concurrent_writers_each_land_once_and_the_returned_state_is_the_stored_one(bus):
    await _built(bus.histories, "c1")
    states = await asyncio.gather(
        *(execute(bus.histories, "c1", StartHostStep(host=h, step="upload")) for h in HOSTS)
    )
    fresh = Histories(bus.events)  # another process: reads everything from the store
    stored = await fresh.state("c1")
    assert all(stored.hosts[h].steps["upload"].status == "running" for h in HOSTS)
    assert stored.version == 4  # release-level events only
    assert all(stored.hosts[h].version == 1 for h in HOSTS)
    for h, s in zip(HOSTS, states, strict=True):
        assert s.hosts[h].steps["upload"].status == "running"

    with pytest.raises(InvariantViolation):
        await execute(bus.histories, "c1", StartHostStep(host="h0", step="activate"))
    assert (await fresh.get("c1")).count == 4 + len(HOSTS)


async def test_hosts_finishing_steps_at_once_do_not_conflict(bus):
    """Each host's ordinary steps are guarded by its own subject: no retries between hosts."""
    await _built(bus.histories, "c2")
    for h in HOSTS:
        await execute(bus.histories, "c2", StartHostStep(host=h, step="upload"))
    calls = 0
    append = bus.events.append

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await append(*args, **kwargs)

    bus.events.append = counting
    await asyncio.gather(
        *(
            execute(bus.histories, "c2", FinishHostStep(host=h, step="upload", exit_code=0, duration=1))
            for h in HOSTS
        )
    )
    assert calls == len(HOSTS), "a host's finish never has to retry because another host appended"
    state = await Histories(bus.events).state("c2")
    assert all(state.hosts[h].steps["upload"].status == "succeeded" for h in HOSTS)


async def test_no_switch_starts_after_a_cancel(bus):
    """A host's switch is guarded by the whole release: a switch decided from a read that did not
    see the cancel is refused, so in the history no switch ever follows the cancel."""
    for i in range(10):
        rid = f"race{i}"
        await _built(bus.histories, rid)
        for step in ("upload", "link", "pre_release"):
            await execute(bus.histories, rid, StartHostStep(host="h0", step=step))
            await execute(bus.histories, rid, FinishHostStep(host="h0", step=step, exit_code=0, duration=1))
        cancel_side, agent_side = Histories(bus.events), Histories(bus.events)
        await cancel_side.get(rid)
        await agent_side.get(rid)
        results = await asyncio.gather(
            execute(cancel_side, rid, Cancel(by="bob")),
            execute(agent_side, rid, StartHostStep(host="h0", step="activate")),
            return_exceptions=True,
        )
        types = [(s.event.type, getattr(s.event, "step", None)) for s in await bus.events.load(rid)]
        cancelled_at = types.index(("release.cancel_requested", None))
        switch = ("host.step_started", "activate")
        assert switch not in types[cancelled_at:], "a switch started after the cancel"
        assert isinstance(results[1], InvariantViolation) == (switch not in types), results
        state = await Histories(bus.events).state(rid)
        assert state.status == "cancelling"  # the host in flight stops, a switched one rolls back


async def test_reading_a_release_a_thousand_times_creates_no_consumer(bus, nats_server):
    await _built(bus.histories, "c3")
    before = (await bus.js.stream_info(EVENTS_STREAM)).state.consumer_count
    for _ in range(1000):
        other = Histories(bus.events)  # a cold read: the whole history every time
        assert (await other.get("c3")).count == 4
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.consumer_count == before
    second = await open_bus(nats_server.url, name="other")
    try:
        for _ in range(100):
            assert len(await second.events.load("c3")) == 4
        assert (await bus.js.stream_info(EVENTS_STREAM)).state.consumer_count == before
    finally:
        await second.close()


async def test_a_cached_read_asks_only_for_what_is_new(bus):
    await _built(bus.histories, "c4")
    reads: list[int] = []
    load = bus.events.load

    async def spying(release_id: str, after: int = 0, **kw):  # type: ignore[no-untyped-def]
        got = await load(release_id, after, **kw)
        reads.append(len(got))
        return got

    other = Histories(bus.events)
    await other.get("c4")
    bus.events.load = spying
    await execute(bus.histories, "c4", StartHostStep(host="h1", step="upload"))
    loaded = await other.get("c4")
    assert reads[-1] == 1, "only the one new event travelled"
    assert loaded.state.hosts["h1"].status == "running"


async def test_reads_of_unknown_releases_leave_nothing_behind(bus):
    histories = Histories(bus.events)
    for i in range(100):
        assert (await histories.get(f"nope-{i}")).count == 0
    assert histories._locks == {} and len(histories._cache) == 0


async def test_the_cache_is_bounded_by_the_events_its_states_hold(bus):
    for rid in ("m1", "m2", "m3"):
        await _built(bus.histories, rid)
    per_release = (await bus.histories.get("m1")).count
    histories = Histories(bus.events, keep_events=2 * per_release)
    for rid in ("m1", "m2", "m3"):
        assert (await histories.get(rid)).count == per_release
    assert list(histories._cache) == ["m2", "m3"]  # the least recently used went first
    assert (await histories.get("m1")).state.status == "deploying"  # read back whole
    assert list(histories._cache) == ["m3", "m1"]


async def test_a_finished_release_is_read_from_the_subject_index_until_something_is_appended(bus):
    """A cached finished release costs one subject-index lookup, not a walk of the stream after it;
    an event appended to it anyway (another writer) is still read."""
    await execute(
        bus.histories,
        "c9",
        RequestRelease(project="p", environment="e", ref="main", requested_by="a", plan=PLAN),
    )
    await execute(bus.histories, "c9", Cancel(by="a"))
    other = Histories(bus.events)
    first = await other.get("c9")
    assert first.state.terminal and sum(first.counts.values()) == first.count == 2

    reads: list[int] = []
    load = bus.events.load

    async def spying(release_id: str, after: int = 0, **kw):  # type: ignore[no-untyped-def]
        got = await load(release_id, after, **kw)
        reads.append(len(got))
        return got

    bus.events.load = spying
    for _ in range(5):
        assert await other.get("c9") is first
    assert reads == [], "nothing was appended: no read of the stream"

    late = HostStepStarted(release_id="c9", version=1, at=utcnow(), host="h1", step="upload")
    await bus.events.append([late], expected_seq=0, whole_release=False)
    again = await other.get("c9")
    assert reads == [1] and again.count == 3 and again.state.hosts["h1"].status == "running"
