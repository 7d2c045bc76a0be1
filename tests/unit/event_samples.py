"""One sample of every release event type, and its wire form, for the event tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.domain import events as ev
from ferry.domain.events import (
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    Event,
    HealthCheck,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    Plan,
    Recipe,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseFailed,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseSucceeded,
    SourceFetched,
    encode,
)

AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
RID = "rel_01HQ7Z3K9V"


def _plan() -> Plan:
    return Plan(
        recipe=Recipe(
            repo_url="ssh://git@git.example.com/shop/web.git",
            repo_credential="shop-deploy-key",
            build_hooks=("npm ci", "npm run build"),
            excludes=(".git", "node_modules"),
            deploy_path="/srv/shop",
            shared_files=(".env",),
            shared_dirs=("storage/logs",),
            pre_release="bin/migrate",
            restart="sudo systemctl restart shop",
            health=HealthCheck(kind="http", target="http://127.0.0.1:8000/healthz"),
        ),
        hosts=("web-1", "web-2"),
        concurrency=2,
        max_failures=0,
        require_approval=True,
    )


def _samples() -> dict[type[Event], Event]:
    meta: dict[str, Any] = {"release_id": RID, "at": AT}
    return {
        ReleaseRequested: ReleaseRequested(
            **meta,
            version=1,
            project="shop",
            environment="prod",
            ref="v1.4.2",
            requested_by="alice",
            plan=_plan(),
        ),
        ReleaseApproved: ReleaseApproved(**meta, version=2, by="bob"),
        ReleaseRejected: ReleaseRejected(**meta, version=2, by="bob", reason="freeze week"),
        BuildStarted: BuildStarted(**meta, version=3, builder="builder-1"),
        SourceFetched: SourceFetched(**meta, version=4, commit="9f2c1e" + "0" * 34, duration=1.25),
        BuildHookFinished: BuildHookFinished(
            **meta, version=5, index=0, command="npm ci", exit_code=0, duration=31.5, output_tail="ok\n"
        ),
        ArtifactPackaged: ArtifactPackaged(
            **meta, version=6, digest="sha256:" + "ab" * 32, size=1048576, format="zst", log_digest="x"
        ),
        BuildFailed: BuildFailed(**meta, version=6, stage="hooks", reason="npm ci exited 1"),
        HostStepStarted: HostStepStarted(**meta, version=7, host="web-1", step="upload", agent="agent-a"),
        HostStepFinished: HostStepFinished(
            **meta,
            version=8,
            host="web-1",
            step="activate",
            exit_code=0,
            duration=0.02,
            detail={"previous": "rel_01HQ6", "nested": {"list": [1, 2]}},
        ),
        HostFailed: HostFailed(**meta, version=9, host="web-1", step="health", reason="503 after 5 tries"),
        HostRolledBack: HostRolledBack(**meta, version=10, host="web-1", to_release="rel_01HQ6"),
        ReleaseSucceeded: ReleaseSucceeded(**meta, version=11),
        ReleaseFailed: ReleaseFailed(**meta, version=11, reason="1 of 2 host(s) failed"),
        ReleaseCancelled: ReleaseCancelled(**meta, version=3, by="alice", reason="wrong ref"),
        ev.ReleasePaused: ev.ReleasePaused(
            **meta, version=12, hosts_done=("web-1",), resume_at=AT + timedelta(minutes=10), reason="canary"
        ),
        ev.ReleaseResumed: ev.ReleaseResumed(**meta, version=13, by="timer"),
        ev.ReleaseCancelRequested: ev.ReleaseCancelRequested(**meta, version=13, by="bob", reason="5xx"),
    }


SAMPLES = _samples()


def _ids(t: type[Event]) -> str:
    return t.__name__


def _wire(event_type: type[Event]) -> dict[str, Any]:
    return json.loads(encode(SAMPLES[event_type]))
