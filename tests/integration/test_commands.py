"""ferry.commands.execute against a real nats-server: concurrent writers all land, none interleave."""

from __future__ import annotations

import asyncio

import pytest

from ferry.commands import execute, load_state
from ferry.errors import InvariantViolation
from ferry.events import Plan, Recipe
from ferry.release import RecordArtifact, RecordSource, RequestRelease, StartBuild, StartHostStep

HOSTS = tuple(f"h{i}" for i in range(8))
PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=HOSTS, concurrency=8)


async def test_concurrent_writers_each_land_once_and_the_returned_state_is_the_stored_one(bus):
    store = bus.events
    await execute(
        store, "c1", RequestRelease(project="p", environment="e", ref="main", requested_by="a", plan=PLAN)
    )
    for command in (
        StartBuild(),
        RecordSource(commit="a" * 40),
        RecordArtifact(digest="b" * 64, size=1, format="zst"),
    ):
        await execute(store, "c1", command)

    states = await asyncio.gather(
        *(execute(store, "c1", StartHostStep(host=h, step="upload")) for h in HOSTS)
    )
    stored = await load_state(store, "c1")
    assert all(stored.hosts[h].steps["upload"].status == "running" for h in HOSTS)
    assert stored.version == 4 + len(HOSTS)
    assert max(s.version for s in states) == stored.version
    for h, s in zip(HOSTS, states, strict=True):
        assert s.hosts[h].steps["upload"].status == "running"

    with pytest.raises(InvariantViolation):
        await execute(store, "c1", StartHostStep(host="h0", step="activate"))
    assert (await load_state(store, "c1")).version == stored.version
