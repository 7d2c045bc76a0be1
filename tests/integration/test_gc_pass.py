"""``ferry.infra.gc.collect`` on a real nats-server and SQLite/PostgreSQL: which artifacts a pass
deletes — those of releases no host keeps — and which it leaves: kept ones, logs, artifacts
younger than the grace period, and those of a project whose next release is being built (its
builder may be reusing one)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from ferry.cli.main import app as cli
from ferry.db.engine import upgrade
from ferry.db.kept import kept_releases
from ferry.db.models import Project
from ferry.domain.release import (
    Fail,
    FailBuild,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    ReleaseState,
    RollBackHost,
    StartHostStep,
    decide,
    evolve,
)
from ferry.infra.bus import Bus
from ferry.infra.gc import collect
from ferry.infra.projector import rebuild
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from tests.harness.history import append_next
from tests.integration.auth_harness import Secured, secured  # noqa: F401
from tests.integration.test_cli_release import LiveGateway
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


async def test_only_an_admin_may_collect(secured: Secured):  # noqa: F811
    for role in ("viewer", "deployer"):
        token = await secured.token(f"gc-{role}", role)
        r = await secured.anon.post("/api/gc", headers=secured.as_(token))
        assert r.status_code == 403, r.text
    report = await secured.admin.ok("POST", "/api/gc")
    assert report["removed"] == 0 and report["refused"] is None


def test_ferry_gc_runs_a_pass_over_http(tmp_path: Path, nats_server: NatsServer, monkeypatch):
    db = f"sqlite:///{tmp_path / 'ferry.db'}"
    upgrade(db)
    settings = Settings(
        home=tmp_path / "home", nats_url=nats_server.url, database_url=db, http_port=free_port()
    )
    with LiveGateway(settings) as gw:
        monkeypatch.setenv("FERRY_URL", gw.url)
        result = CliRunner().invoke(cli, ["gc"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("removed 0 artifacts (0 bytes freed)")
        as_json = CliRunner().invoke(cli, ["gc", "--json"])
        assert json.loads(as_json.output)["objects"] >= 0


async def test_a_host_rolled_back_keeps_the_release_it_runs(bus: Bus, session_factory: sessionmaker[Session]):
    """keep_releases 1: the newest release that switched the host failed its health check and
    rolled back, so the host runs the one before — both stay kept, the older ones do not."""
    with session_factory() as session, session.begin():
        session.add(Project(name="shop", repo_url="file:///srv/git/app.git", config={"keep_releases": 1}))
    for n, rid in enumerate(("a", "b", "c")):
        await append_next(bus.events, history(rid, n, "abc"[n - 1] if n else None))
    events = history("d", 3, None, finish=False)
    state = ReleaseState("d")
    for e in events:
        state = evolve(state, e)
    clock = T0 + timedelta(minutes=3, seconds=1)
    commands = [
        RecordSource(commit="d" * 40, duration=0.1),
        RecordArtifact(digest="d" * 64, size=1, format="zst"),
    ]
    for step in ("upload", "link", "pre_release", "activate", "restart", "health"):
        failed = step == "health"
        detail: dict[str, object] = {"previous": "c"} if step == "activate" else {}
        commands += [
            StartHostStep(host="web1", step=step),
            FinishHostStep(host="web1", step=step, exit_code=1 if failed else 0, duration=0.1, detail=detail),
        ]
    commands += [
        FailHost(host="web1", step="health", reason="unhealthy"),
        RollBackHost(host="web1", to_release="c", healthy=True),
        Fail(reason="host web1 failed at health"),
    ]
    for command in commands:
        for e in decide(state, command, clock):
            state = evolve(state, e)
            events.append(e)
    await append_next(bus.events, events)
    await rebuild(bus, session_factory)
    with session_factory() as session:
        assert kept_releases(session) == {"d", "c"}
