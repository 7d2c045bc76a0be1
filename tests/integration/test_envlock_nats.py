"""The environment lock against a real nats-server: compare-and-set under races, no consumers,
stale holders released by the reconciler."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ferry.domain.events import Plan, Recipe
from ferry.domain.release import Cancel, RequestRelease
from ferry.infra import orchestrator
from ferry.infra.commands import execute
from ferry.infra.envlock import BUCKET, EnvLocks

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a",))


async def test_racing_joins_give_one_holder_and_a_queue_holding_everyone(bus):
    locks = EnvLocks(bus.js)
    ids = [f"r{i}" for i in range(12)]
    await asyncio.gather(*(locks.join("shop", "prod", rid) for rid in ids))
    lock = await locks.get("shop", "prod")
    assert lock.holder in ids and sorted([lock.holder, *lock.waiting]) == sorted(ids)
    order = [lock.holder, *lock.waiting]
    tokens = [lock.token]
    for rid in order[:-1]:  # each end hands the lock to the next in line, with a newer token
        _, after = await locks.leave("shop", "prod", rid)
        assert after.holder == order[order.index(rid) + 1]
        tokens.append(after.token)
    assert tokens == sorted(set(tokens)), "the fencing token only grows"


async def test_listing_and_reading_locks_creates_no_consumer(bus):
    locks = EnvLocks(bus.js)
    await locks.join("shop", "prod", "r1")
    await locks.join("blog", "test", "r2")
    before = (await bus.js.stream_info(f"KV_{BUCKET}")).state.consumer_count
    for _ in range(50):
        assert sorted((lock.project, lock.holder) for lock in await locks.all()) == [
            ("blog", "r2"),
            ("shop", "r1"),
        ]
    assert (await bus.js.stream_info(f"KV_{BUCKET}")).state.consumer_count == before


async def test_the_reconciler_releases_a_lock_whose_holder_ended_or_never_began(bus, monkeypatch):
    await execute(
        bus.histories,
        "held",
        RequestRelease(project="shop", environment="prod", ref="main", requested_by="a", plan=PLAN),
    )
    await bus.locks.join("shop", "prod", "held")
    await bus.locks.join("shop", "prod", "ghost")  # joined, but its request never got recorded
    await bus.locks.join("shop", "prod", "next")
    await execute(bus.histories, "held", Cancel(by="bob"))  # ended without the orchestrator seeing it
    monkeypatch.setattr(orchestrator, "LOCK_GRACE", timedelta(0))
    monkeypatch.setattr(orchestrator, "react", _no_reaction)
    released = await orchestrator.release_stale_locks(bus)
    assert released == ["held", "ghost", "next"], "an ended holder, and places whose request never landed"
    lock = await bus.locks.get("shop", "prod")
    assert (lock.holder, lock.waiting) == (None, [])


async def _no_reaction(*args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    return 0
