"""``ferry.infra.gc.collect`` on a real nats-server and SQLite/PostgreSQL: which artifacts a pass
deletes — those of releases no host keeps — and which it leaves: kept ones, logs, artifacts
younger than the grace period, and those of a project whose next release is being built (its
builder may be reusing one)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from ferry.db.kept import kept_releases
from ferry.db.models import Project
from ferry.domain.release import FailBuild, ReleaseState, decide, evolve
from ferry.infra.bus import Bus
from ferry.infra.gc import collect
from ferry.infra.projector import rebuild
from tests.harness.history import append_next
from tests.integration.test_retention import T0, history


async def stored(bus: Bus) -> set[str]:
    return {i.name for i in await bus.artifacts.os.list(ignore_deletes=True) if not i.deleted}


async def test_a_pass_deletes_exactly_the_artifacts_no_kept_release_needs(
    bus: Bus, session_factory: sessionmaker[Session]
):
    with session_factory() as session, session.begin():
        for name in ("shop", "blog"):
            session.add(
                Project(name=name, repo_url=f"file:///srv/git/{name}.git", config={"keep_releases": 2})
            )
    digests = {}
    for project in ("shop", "blog"):
        for n in range(4):
            rid = f"{project}{n}"
            digests[rid] = (await bus.artifacts.put_bytes(f"{rid} artifact".encode() * 50)).digest
            previous = f"{project}{n - 1}" if n else None
            await append_next(bus.events, history(rid, n, previous, digest=digests[rid], project=project))
    log = (await bus.artifacts.put_bytes(b"a step log the history points to")).digest
    await rebuild(bus, session_factory)
    with session_factory() as session:
        assert kept_releases(session) == {"shop3", "shop2", "blog3", "blog2"}

    young = await collect(bus.artifacts, session_factory, grace=3600)
    assert young.removed == [] and young.spared_young == 4, "everything was stored just now"

    # a shop release is being built: its builder may be reusing shop's older artifacts
    await append_next(bus.events, history("shop4", 4, None, project="shop", finish=False))
    await rebuild(bus, session_factory)
    first = await collect(bus.artifacts, session_factory, grace=0)
    assert sorted(first.removed) == sorted([digests["blog0"], digests["blog1"]])
    assert first.spared_building == 2 and first.bytes_freed == 2 * len(b"blog0 artifact" * 50)

    building = history("shop4", 4, None, project="shop", finish=False)
    state = ReleaseState("shop4")
    for e in building:
        state = evolve(state, e)
    await append_next(bus.events, decide(state, FailBuild(stage="fetch", reason="no such ref"), T0))
    await rebuild(bus, session_factory)
    second = await collect(bus.artifacts, session_factory, grace=0)
    assert sorted(second.removed) == sorted([digests["shop0"], digests["shop1"]])
    kept = {digests[r] for r in ("shop2", "shop3", "blog2", "blog3")}
    assert await stored(bus) == kept | {log}, "kept artifacts and the log stay"
    assert (await collect(bus.artifacts, session_factory, grace=0)).removed == []
