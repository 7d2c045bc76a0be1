"""The release projection against real nats-server and real SQLite/PostgreSQL.

Redelivery changes nothing, a rebuild gives the same rows, the position moves only with
the rows it covers, and the rows say what ``ferry.domain.release.replay`` says.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ferry.db import repo
from ferry.db.models import PROJECTED_TABLES, ProjectionPosition
from ferry.domain.events import Event
from ferry.domain.release import replay
from ferry.infra.eventstore import StoredEvent
from ferry.infra.projector import Projector, rebuild
from tests.harness.db import release_histories
from tests.harness.history import append_next

Snapshot = dict[str, list[tuple[object, ...]]]


def snapshot(sessions: sessionmaker[Session]) -> Snapshot:
    """Every projected row and the position, in primary-key order."""
    out: Snapshot = {}
    with sessions() as s:
        for model in (*PROJECTED_TABLES, ProjectionPosition):
            table = model.__table__
            rows = s.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


async def append_interleaved(bus, histories: dict[str, list[Event]], seed: int = 3) -> list[StoredEvent]:
    """Append every history, releases interleaved in small chunks as concurrent releases would be."""
    rng = random.Random(seed)
    cursor = {rid: 0 for rid in histories}
    while cursor:
        rid = rng.choice(sorted(cursor))
        start = cursor[rid]
        chunk = histories[rid][start : start + rng.randint(1, 6)]
        await append_next(bus.events, chunk)
        cursor[rid] = start + len(chunk)
        if cursor[rid] == len(histories[rid]):
            del cursor[rid]
    return [e async for e in bus.events.read("ferry.release.>")]


def assert_rows_match_the_aggregate(
    sessions: sessionmaker[Session], histories: dict[str, list[Event]]
) -> None:
    with sessions() as s:
        for rid, events in histories.items():
            state = replay(rid, events)
            view = repo.get_release(s, rid)
            assert view.status == state.status, rid
            assert (view.project, view.environment, view.ref) == (state.project, state.environment, state.ref)
            assert view.commit == state.commit
            assert view.reason == state.reason
            assert (view.requested_at, view.finished_at) == (state.requested_at, state.finished_at)
            assert view.last_version == state.version
            art = state.artifact
            assert (view.artifact_digest, view.artifact_size, view.artifact_reused) == (
                (art.digest, art.size, art.reused) if art else (None, None, None)
            )
            assert state.plan is not None
            assert [h.host for h in view.hosts] == list(state.plan.hosts)
            for h in view.hosts:
                expected = state.hosts[h.host]
                assert (h.status, h.failure, h.activated, h.previous_release) == (
                    expected.status,
                    expected.failure,
                    expected.activated,
                    expected.previous_release,
                ), (rid, h.host)
                assert [st.step for st in h.steps] == list(expected.steps)  # run order
                for st in h.steps:
                    want = expected.steps[st.step]
                    assert (st.status, st.exit_code, st.started_at, st.duration) == (
                        want.status,
                        want.exit_code,
                        want.started_at,
                        want.duration,
                    )


def apply_in_batches(projector: Projector, stored: Sequence[StoredEvent], size: int = 250) -> int:
    return sum(projector.apply_batch(stored[i : i + size]) for i in range(0, len(stored), size))


async def test_thousand_events_redelivered_and_rebuilt_give_the_same_rows(bus, session_factory):
    started = time.monotonic()
    histories = release_histories(1000)
    stored = await append_interleaved(bus, histories)
    assert len(stored) == 1000 and [s.seq for s in stored] == list(range(1, 1001))

    projector = Projector(session_factory)
    assert apply_in_batches(projector, stored) == 1000
    first = snapshot(session_factory)
    assert first["projection_position"] == [("releases", 1000)]
    assert len(first["releases"]) == len(histories)
    assert_rows_match_the_aggregate(session_factory, histories)

    # Redelivery from sequence 0, in other batch sizes and one at a time: nothing changes.
    assert apply_in_batches(projector, stored, size=333) == 0
    assert not any(projector.apply(s) for s in stored[::50])
    assert snapshot(session_factory) == first

    # A rebuild from the stream replays everything into the same rows.
    assert await rebuild(bus, session_factory) == 1000
    assert snapshot(session_factory) == first
    # ... also over a read model that had drifted.
    with session_factory() as s, s.begin():
        s.execute(PROJECTED_TABLES[-1].__table__.update().values(status="garbage"))
    assert await projector.rebuild(bus) == 1000
    assert snapshot(session_factory) == first
    assert time.monotonic() - started < 20


async def test_run_follows_the_stream_and_resumes_from_its_position(bus, session_factory):
    histories = release_histories(120, seed=11)
    rids = sorted(histories)
    half = rids[: len(rids) // 2]
    for rid in half:
        await append_next(bus.events, histories[rid])

    projector = Projector(session_factory)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(bus, stop))
    last = await bus.events.last_seq()
    await projector.wait(last, timeout=10)
    with session_factory() as s:
        assert {r.id for r in repo.list_releases(s, limit=1000)} == set(half)
    stop.set()
    await asyncio.wait_for(task, 10)

    # Events appended while no projector runs are picked up from the stored position.
    for rid in rids[len(half) :]:
        await append_next(bus.events, histories[rid])
    stop = asyncio.Event()
    again = Projector(session_factory)
    task = asyncio.create_task(again.run(bus, stop))
    last = await bus.events.last_seq()
    await again.wait(last, timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert again.position() == last == sum(len(h) for h in histories.values())
    assert_rows_match_the_aggregate(session_factory, histories)

    # A second process's projector is seen through the database by wait().
    await Projector(session_factory).wait(last, timeout=1)


async def test_wait_times_out_with_the_position(session_factory):
    with pytest.raises(TimeoutError, match="not yet at 5"):
        await Projector(session_factory).wait(5, timeout=0.05)


def stored_events(total: int, seed: int = 5) -> list[StoredEvent]:
    events = [e for h in release_histories(total, seed=seed).values() for e in h]
    return [StoredEvent(seq, e) for seq, e in enumerate(events, start=1)]


def test_failure_mid_batch_leaves_rows_and_position_unchanged(session_factory, monkeypatch):
    stored = stored_events(200)
    projector = Projector(session_factory)
    projector.apply_batch(stored[:100])
    before = snapshot(session_factory)

    calls = 0
    original = projector._project_one

    def explode_on_the_third(rows, event):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("boom")
        original(rows, event)

    monkeypatch.setattr(projector, "_project_one", explode_on_the_third)
    with pytest.raises(RuntimeError, match="boom"):
        projector.apply_batch(stored[100:150])
    assert snapshot(session_factory) == before
    assert projector.position() == 100

    monkeypatch.undo()
    assert projector.apply_batch(stored[100:]) == 100
    assert projector.position() == 200
    fresh_db_rows = snapshot(session_factory)
    assert fresh_db_rows["projection_position"] == [("releases", 200)]


def test_concurrent_projectors_apply_each_event_once(session_factory):
    stored = stored_events(300, seed=9)
    reference = Projector(session_factory)
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker(order: int) -> None:
        p = Projector(session_factory, batch_size=40)
        rng = random.Random(order)
        try:
            barrier.wait()
            i = 0
            while i < len(stored):
                n = rng.randint(1, 40)
                p.apply_batch(stored[max(0, i - 10) : i + n])  # overlapping redelivery
                i += n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert reference.position() == 300
    concurrent = snapshot(session_factory)

    histories: dict[str, list[Event]] = {}
    for s in stored:
        histories.setdefault(s.event.release_id, []).append(s.event)
    assert_rows_match_the_aggregate(session_factory, histories)
    assert len(concurrent["releases"]) == len(histories)


def test_release_queries(session_factory):
    stored = stored_events(400, seed=13)
    Projector(session_factory).apply_batch(stored)
    histories: dict[str, list[Event]] = {}
    for s in stored:
        histories.setdefault(s.event.release_id, []).append(s.event)
    states = {rid: replay(rid, h) for rid, h in histories.items()}
    with session_factory() as s:
        everything = repo.list_releases(s, limit=1000)
        assert len(everything) == len(states)
        times = [r.requested_at for r in everything]
        assert times == sorted(times, reverse=True)
        shop_prod = repo.list_releases(s, project="shop", environment="prod", limit=1000)
        assert {r.id for r in shop_prod} == {
            rid for rid, st in states.items() if (st.project, st.environment) == ("shop", "prod")
        }
        failed = repo.list_releases(s, status="failed", limit=1000)
        assert {r.id for r in failed} == {rid for rid, st in states.items() if st.status == "failed"}
        assert len(repo.list_releases(s, limit=3)) == 3
        assert [r.id for r in repo.list_releases(s, limit=2, offset=1)] == [r.id for r in everything[1:3]]
        assert repo.count_releases(s, status="failed") == len(failed)
        assert repo.projection_position(s) == len(stored)


def _canary_history(rid: str, *, then: str) -> list[Event]:
    from datetime import UTC, datetime, timedelta

    from ferry.domain.events import HOST_STEPS, Plan, Recipe
    from ferry.domain.release import (
        Cancel,
        FinishHostStep,
        Pause,
        RecordArtifact,
        RecordSource,
        ReleaseState,
        RequestRelease,
        Resume,
        StartBuild,
        StartHostStep,
        decide,
        evolve,
    )

    plan = Plan(
        recipe=Recipe(repo_url="file:///x", deploy_path="/srv/app"), hosts=("a", "b", "c"), strategy="canary"
    )
    commands: list[object] = [
        RequestRelease("shop", "prod", "main", "alice", plan),
        StartBuild(),
        RecordSource("f" * 40),
        RecordArtifact("d" * 64, 10, "zst"),
    ]
    for step in HOST_STEPS:
        commands += [StartHostStep("a", step), FinishHostStep("a", step, 0, 0.1)]
    commands.append(Pause())
    commands += {"paused": [], "resumed": [Resume("bob")], "cancelling": [Cancel("bob", "bad canary")]}[then]
    state, out = ReleaseState(rid), []
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    for i, command in enumerate(commands):
        for e in decide(state, command, t0 + timedelta(seconds=i)):  # type: ignore[arg-type]
            state = evolve(state, e)
            out.append(e)
    assert state.status == then if then != "resumed" else state.status == "deploying"
    return out


def test_paused_resumed_and_cancelling_releases_in_the_read_model(session_factory):
    histories = {
        f"r-{then}": _canary_history(f"r-{then}", then=then) for then in ("paused", "resumed", "cancelling")
    }
    seq = 0
    stored: list[StoredEvent] = []
    for events in histories.values():
        for e in events:
            seq += 1
            stored.append(StoredEvent(seq, e))
    Projector(session_factory).apply_batch(stored)
    assert_rows_match_the_aggregate(session_factory, histories)
    with session_factory() as s:
        assert [r.id for r in repo.list_releases(s, status="paused")] == ["r-paused"]
        assert [r.id for r in repo.list_releases(s, status="cancelling")] == ["r-cancelling"]
        assert repo.get_release(s, "r-resumed").status == "deploying"


async def test_a_projector_started_mid_release_reads_its_state_back_from_the_store(bus, session_factory):
    """States are kept in memory: a new projector (or one that dropped a state) folds the
    release's earlier events from the event store once, then goes on from memory."""
    histories = release_histories(400, seed=17)
    halves = {rid: (h[: len(h) // 2], h[len(h) // 2 :]) for rid, h in histories.items()}
    for first, _ in halves.values():
        if first:
            await append_next(bus.events, first)
    stop = asyncio.Event()
    first_projector = Projector(session_factory)
    task = asyncio.create_task(first_projector.run(bus, stop))
    await first_projector.wait(await bus.events.last_seq(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)

    for _, second in halves.values():
        await append_next(bus.events, second)
    stop = asyncio.Event()
    again = Projector(session_factory, keep=5)  # a small cache: most states are read back
    task = asyncio.create_task(again.run(bus, stop))
    await again.wait(await bus.events.last_seq(), timeout=15)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert again.states.reloads >= len([h for h in halves.values() if h[0] and h[1]])
    assert_rows_match_the_aggregate(session_factory, histories)
    incremental = snapshot(session_factory)

    # A rebuild whose cache holds 5 states replays into the same rows.
    rebuilder = Projector(session_factory, keep=5, batch_size=50)
    assert await rebuilder.rebuild(bus) == sum(len(h) for h in histories.values())
    assert snapshot(session_factory) == incremental
    assert rebuilder.states.reloads > 0  # the interleaved stream outgrew the cache


def test_without_the_event_store_a_missing_state_is_an_error_not_a_guess(session_factory):
    stored = stored_events(60, seed=19)
    Projector(session_factory).apply_batch(stored[:30])
    later = [s for s in stored[30:] if any(p.event.release_id == s.event.release_id for p in stored[:30])]
    assert later, "the seed must cut a release in two"
    with pytest.raises(RuntimeError, match="no event store"):
        Projector(session_factory).apply_batch(later)
