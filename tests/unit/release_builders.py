"""Builders shared by the release aggregate's tests: a Release driven through decide/evolve, terminal
routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe
from ferry.domain.release import (
    Cancel,
    Command,
    Fail,
    FailBuild,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    ReleaseState,
    RequestRelease,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
RID = "rel-1"
HOSTS = ("web-1", "web-2")
COMMIT = "9f2c1e07b4a3d85c6e1f0a9b2c3d4e5f60718293"


def make_plan(hosts: Sequence[str] = HOSTS, **kw: object) -> Plan:
    recipe = Recipe(repo_url="file:///srv/git/shop.git", deploy_path="/srv/shop")
    return Plan(recipe=recipe, hosts=tuple(hosts), **kw)  # type: ignore[arg-type]


class Release:
    """A release under test: applies commands through decide/evolve and keeps the history."""

    def __init__(self) -> None:
        self.state = ReleaseState(RID)
        self.history: list[Event] = []

    def __call__(self, *commands: Command) -> Release:
        for command in commands:
            now = T0 + timedelta(seconds=len(self.history))
            events = decide(self.state, command, now)
            for event in events:
                self.state = evolve(self.state, event)
            self.history.extend(events)
        return self

    def refuses(self, command: Command, match: str | None = None) -> InvariantViolation:
        before = self.state
        with pytest.raises(InvariantViolation, match=match) as info:
            decide(self.state, command, T0)
        assert self.state == before
        return info.value

    # --- scripted stretches ---------------------------------------------------
    def requested(self, hosts: Sequence[str] = HOSTS, **kw: object) -> Release:
        return self(RequestRelease("shop", "prod", "v1.4.2", "alice", make_plan(hosts, **kw)))

    def built(self) -> Release:
        return self(
            StartBuild("builder-1"),
            RecordSource(COMMIT, 1.5),
            RecordHook(0, "npm ci", 0, 30.0, "ok"),
            RecordArtifact("sha256:" + "ab" * 32, 1024, "zst"),
        )

    def ready(self, hosts: Sequence[str] = HOSTS, **kw: object) -> Release:
        return self.requested(hosts, **kw).built()

    def steps(self, host: str, steps: Sequence[str], previous: str | None = "rel-0") -> Release:
        for step in steps:
            detail = {"previous": previous} if step == "activate" and previous else {}
            self(StartHostStep(host, step, "agent-1"), FinishHostStep(host, step, 0, 0.1, "", detail))
        return self

    def host_done(self, host: str) -> Release:
        return self.steps(host, HOST_STEPS)

    def up_to(self, host: str, step: str) -> Release:
        """Run every step of ``host`` before ``step``."""
        return self.steps(host, HOST_STEPS[: HOST_STEPS.index(step)])


def release() -> Release:
    return Release()


def _succeeded() -> Release:
    r = release().ready(hosts=("web-1",))
    return r.host_done("web-1")(Succeed())


def _failed() -> Release:
    return release().requested()(StartBuild(), FailBuild("fetch", "ref not found"))


def _failed_after_hosts() -> Release:
    r = release().ready().up_to("web-1", "health")
    return r(FailHost("web-1", "health", "503"), RollBackHost("web-1", "rel-0"), Fail("web-1 failed"))


def _cancelled() -> Release:
    """A cancel while a host uploads: the host stops (CANCELLED), then the release ends cancelled."""
    return release().ready()(
        StartHostStep("web-1", "upload"),
        Cancel("alice", "wrong ref"),
        FinishHostStep("web-1", "upload", 0, 1.0),
        FailHost("web-1", "link", "cancelled by alice", "CANCELLED"),
        Cancel("alice"),
    )
