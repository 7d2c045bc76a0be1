"""Event store against a real nats-server: concurrency, history, restart after SIGKILL."""

from __future__ import annotations

import asyncio

import pytest

from ferry.domain.errors import ConcurrencyError, InvalidInput
from ferry.domain.events import BuildStarted, HostStepStarted, Plan, Recipe, ReleaseRequested, utcnow
from ferry.domain.release import RecordArtifact, RecordSource, RequestRelease, StartBuild, replay
from ferry.infra.bus import open_bus
from ferry.infra.commands import Histories, execute
from ferry.infra.eventstore import legacy_subject, release_of, subject_of

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


def started(rid: str, host: str, version: int = 1, step: str = "upload") -> HostStepStarted:
    return HostStepStarted(release_id=rid, version=version, at=utcnow(), host=host, step=step)


async def test_append_and_load_in_order(bus):
    (seq,) = await bus.events.append([requested("r1")], expected_seq=0, whole_release=True)
    (seq2,) = await bus.events.append(
        [BuildStarted(release_id="r1", version=2, at=utcnow())], expected_seq=seq, whole_release=True
    )
    history = await bus.events.load("r1")
    assert [e.event.version for e in history] == [1, 2]
    assert [e.seq for e in history] == [seq, seq2]
    assert [e.subject for e in history] == ["ferry.release.r1.release"] * 2
    assert history[0].event == requested("r1").model_copy(update={"at": history[0].event.at})
    assert await bus.events.load("unknown") == []


async def test_host_events_live_on_their_hosts_subjects(bus):
    (seq,) = await bus.events.append([requested("r5")], expected_seq=0, whole_release=True)
    await bus.events.append([started("r5", "a")], expected_seq=seq, whole_release=True)
    await bus.events.append([started("r5", "web.example.com")], expected_seq=0, whole_release=False)
    history = await bus.events.load("r5")
    assert [e.subject for e in history] == [
        "ferry.release.r5.release",
        "ferry.release.r5.host.a",
        "ferry.release.r5.host.web~example~com",
    ]
    assert subject_of(history[2].event) == history[2].subject
    assert release_of(history[2].subject) == "r5" == release_of(legacy_subject("r5"))


async def test_wrong_expected_sequence_raises(bus):
    (seq,) = await bus.events.append([requested("r2")], expected_seq=0, whole_release=True)
    with pytest.raises(ConcurrencyError):
        await bus.events.append(
            [BuildStarted(release_id="r2", version=2, at=utcnow())], expected_seq=0, whole_release=True
        )
    with pytest.raises(InvalidInput):  # one append writes one release
        await bus.events.append([requested("r2"), requested("r9")], expected_seq=seq, whole_release=True)


async def test_a_host_append_is_guarded_by_its_own_subject_only(bus):
    (seq,) = await bus.events.append([requested("r6")], expected_seq=0, whole_release=True)
    (a1,) = await bus.events.append([started("r6", "a")], expected_seq=seq, whole_release=True)
    # host b appends without having seen host a's event: its own subject is still empty
    (b1,) = await bus.events.append([started("r6", "b")], expected_seq=0, whole_release=False)
    assert b1 > a1
    with pytest.raises(ConcurrencyError):  # but it must have seen its own last event
        await bus.events.append([started("r6", "b", 2, "link")], expected_seq=0, whole_release=False)
    with pytest.raises(ConcurrencyError):  # and a whole-release append must have seen everything
        await bus.events.append(
            [BuildStarted(release_id="r6", version=2, at=utcnow())], expected_seq=a1, whole_release=True
        )


async def test_two_concurrent_writers_exactly_one_wins(bus):
    (seq,) = await bus.events.append([requested("r3")], expected_seq=0, whole_release=True)

    async def writer(name: str) -> str:
        events = [started("r3", "a", 1 + i, f"{name}-{i}") for i in range(5)]
        try:
            await bus.events.append(events, expected_seq=seq, whole_release=True)
        except ConcurrencyError:
            return "lost"
        return "won"

    results = await asyncio.gather(writer("x"), writer("y"))
    assert sorted(results) == ["lost", "won"]
    history = await bus.events.load("r3")
    writers = {e.event.step.split("-")[0] for e in history[1:]}  # type: ignore[attr-defined]
    assert len(writers) == 1, "histories interleaved"
    assert [e.event.version for e in history[1:]] == list(range(1, len(history)))


async def test_many_races_never_interleave(bus):
    async def writer(rid: str, name: str, after: int) -> bool:
        try:
            await bus.events.append([started(rid, "a", 1, name)], expected_seq=after, whole_release=True)
            return True
        except ConcurrencyError:
            return False

    for i in range(20):
        rid = f"race{i}"
        (seq,) = await bus.events.append([requested(rid)], expected_seq=0, whole_release=True)
        wins = await asyncio.gather(*(writer(rid, f"w{j}", seq) for j in range(4)))
        assert sum(wins) == 1
        assert len(await bus.events.load(rid)) == 2


async def test_retried_append_is_deduplicated(bus):
    ev = requested("r4")
    # the same event appended twice at once (a retry racing its original) is stored once
    results = await asyncio.gather(
        bus.events.append([ev], expected_seq=0, whole_release=True),
        bus.events.append([ev], expected_seq=0, whole_release=True),
        return_exceptions=True,
    )
    assert all(isinstance(r, list | ConcurrencyError) for r in results)
    assert len(await bus.events.load("r4")) == 1


async def test_a_release_recorded_in_the_old_layout_is_read_and_continued(bus):
    """Releases appended before the per-host layout sit on ``ferry.release.<id>``: they are read
    in stream order with what is appended in the new layout."""
    old = [requested("lg"), BuildStarted(release_id="lg", version=2, at=utcnow())]
    for i, event in enumerate(old):
        await bus.js.publish(legacy_subject("lg"), event.to_json(), headers={"Ferry-Version": str(i + 1)})
    histories = Histories(bus.events)
    state = await histories.state("lg")
    assert state.status == "building" and state.version == 2
    await execute(histories, "lg", RecordSource(commit="c" * 40))
    history = await bus.events.load("lg")
    assert [s.subject for s in history] == [legacy_subject("lg")] * 2 + ["ferry.release.lg.release"]
    assert (await Histories(bus.events).state("lg")).commit == "c" * 40


async def test_a_long_history_is_read_in_batches(bus):
    (seq,) = await bus.events.append([requested("long")], expected_seq=0, whole_release=True)
    events = [started("long", "a", v, f"s{v}") for v in range(1, 601)]
    await bus.events.append(events, expected_seq=0, whole_release=False)
    history = await bus.events.load("long")
    assert len(history) == 601 and [s.seq for s in history] == sorted(s.seq for s in history)
    assert len(await bus.events.load("long", after=history[-3].seq)) == 2


async def test_follow_from_sequence(bus):
    for i in range(3):
        await bus.events.append([requested(f"f{i}")], expected_seq=0, whole_release=True)
    seen = []
    async for stored in bus.events.follow(from_seq=2):
        seen.append(stored.event.release_id)
        if len(seen) == 2:
            break
    assert seen == ["f1", "f2"]


async def test_sigkill_and_restart_keeps_history_and_artifact(nats_server, tmp_path):
    bus = await open_bus(nats_server.url, name="t")
    await execute(
        bus.histories,
        "k1",
        RequestRelease(project="p", environment="e", ref="main", requested_by="a", plan=PLAN),
    )
    for cmd in (StartBuild(), RecordSource(commit="a" * 40)):
        await execute(bus.histories, "k1", cmd)
    blob = tmp_path / "artifact.bin"
    blob.write_bytes(bytes(range(256)) * 20_000)  # ~5 MB, several chunks
    stored = await bus.artifacts.put_file(blob)
    await execute(bus.histories, "k1", RecordArtifact(digest=stored.digest, size=stored.size, format="none"))
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
