"""History retention (``ferry.infra.retention``) on a real nats-server and SQLite/PostgreSQL: old
releases that are not kept move to the archive — events and logs, written before anything is
removed — kept releases and logs a retained release points to stay, and retention without an
archive directory removes nothing."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ferry.db.models import Project
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe
from ferry.domain.release import (
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    ReleaseState,
    RequestRelease,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)
from ferry.infra.bus import Bus
from ferry.infra.projector import rebuild
from ferry.infra.retention import RetentionSettings, archive_pass
from tests.harness.history import append_next

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(
    rid: str,
    n: int,
    previous: str | None,
    build_log: str | None = None,
    step_log: str | None = None,
    *,
    digest: str | None = None,
    project: str = "shop",
    finish: bool = True,
) -> list[Event]:
    """A release to one host ``web1`` (``n`` orders them in time); ``finish=False``: still building."""
    clock = iter(T0 + timedelta(minutes=n, milliseconds=i) for i in range(1000))
    plan = Plan(recipe=Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app"), hosts=("web1",))
    state, out = ReleaseState(rid), []
    commands: list[Any] = [
        RequestRelease(project=project, environment="prod", ref="main", requested_by="alice", plan=plan),
        StartBuild(builder="b1"),
    ]
    if finish:
        commands += [
            RecordSource(commit=f"{n:040x}", duration=0.1),
            RecordArtifact(digest=digest or f"{n:064x}", size=10, format="zst", log_digest=build_log),
        ]
        for step in HOST_STEPS:
            detail: dict[str, object] = {"previous": previous} if step == "activate" and previous else {}
            if step == "post_release" and step_log:
                detail["log_digest"] = step_log
            commands += [
                StartHostStep(host="web1", step=step, agent="a1"),
                FinishHostStep(host="web1", step=step, exit_code=0, duration=0.01, detail=detail),
            ]
        commands.append(Succeed())
    for command in commands:
        for e in decide(state, command, next(clock)):
            state = evolve(state, e)
            out.append(e)
    return out


async def test_old_history_moves_to_the_archive_and_kept_history_stays(
    bus: Bus, session_factory: sessionmaker[Session], tmp_path: Path
):
    with session_factory() as session, session.begin():
        session.add(Project(name="shop", repo_url="file:///srv/git/app.git", config={"keep_releases": 2}))
    shared = (await bus.artifacts.put_bytes(b"the same build log twice\n")).digest
    own = (await bus.artifacts.put_bytes(b"r1's step log\n" * 100)).digest
    ids = [f"r{i}" for i in range(6)]
    logs = {"r0": (shared, None), "r1": (None, own), "r5": (shared, None)}
    for n, rid in enumerate(ids):
        build_log, step_log = logs.get(rid, (None, None))
        await append_next(bus.events, history(rid, n, ids[n - 1] if n else None, build_log, step_log))
    await rebuild(bus, session_factory)
    before = {rid: await bus.events.load(rid) for rid in ids}
    now = T0 + timedelta(days=60)

    refused = await archive_pass(bus, session_factory, RetentionSettings(days=30, archive=None), now=now)
    assert refused.refused and not refused.archived
    assert [len(await bus.events.load(rid)) for rid in ids] == [len(before[rid]) for rid in ids]

    archive = tmp_path / "archive"
    report = await archive_pass(bus, session_factory, RetentionSettings(days=30, archive=archive), now=now)
    old, kept = ids[:4], ids[4:]  # keep_releases 2: r5 (live) and r4
    assert report.archived == old
    for rid in old:
        assert await bus.events.load(rid) == [], f"{rid} left the stream"
        with gzip.open(archive / f"{rid}.jsonl.gz", "rt") as f:
            records = [json.loads(line) for line in f]
        assert [r["seq"] for r in records] == [s.seq for s in before[rid]]
        assert [json.loads(base64.b64decode(r["data"])) for r in records] == [
            s.event.model_dump(mode="json") for s in before[rid]
        ]
    for rid in kept:
        assert await bus.events.load(rid) == before[rid], f"kept {rid} untouched"
    assert (archive / "logs" / own).read_bytes() == b"r1's step log\n" * 100
    assert await bus.artifacts.exists(own) is None, "r1's own log moved to the archive"
    assert (archive / "logs" / shared).exists()
    assert await bus.artifacts.exists(shared) is not None, "r5, kept, still points to the shared log"
    assert report.logs_removed == 1 and report.bytes_freed == len(b"r1's step log\n" * 100)

    again = await archive_pass(bus, session_factory, RetentionSettings(days=30, archive=archive), now=now)
    assert again.archived == [], "an archived release is never archived (or overwritten) again"
    with gzip.open(archive / "r0.jsonl.gz", "rt") as f:
        assert len(f.readlines()) == len(before["r0"])
