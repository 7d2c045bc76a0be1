"""Builders shared by the rollout policy's tests: a Release that records what the policy asks for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe
from ferry.domain.release import (
    Command,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    ReleaseState,
    RequestRelease,
    StartBuild,
    StartHostStep,
    decide,
    evolve,
)
from ferry.domain.rollout import ScheduleHost, next_actions

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
FIVE = ("h1", "h2", "h3", "h4", "h5")


class Release:
    def __init__(self, hosts: Sequence[str] = FIVE, **plan: object) -> None:
        self.state = ReleaseState("rel-1")
        self.history: list[Event] = []
        recipe = Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app")
        self(RequestRelease("app", "prod", "main", "alice", Plan(recipe=recipe, hosts=tuple(hosts), **plan)))  # type: ignore[arg-type]

    def __call__(self, *commands: Command) -> Release:
        for command in commands:
            for event in decide(self.state, command, T0 + timedelta(seconds=len(self.history))):
                self.state = evolve(self.state, event)
                self.history.append(event)
        return self

    def built(self) -> Release:
        return self(StartBuild(), RecordSource("c0ffee"), RecordArtifact("sha256:00", 1, "zst"))

    def start(self, host: str) -> Release:
        return self(StartHostStep(host, "upload"))

    def run_steps(self, host: str, steps: Sequence[str]) -> Release:
        for step in steps:
            h = self.state.hosts[host]
            if not (step in h.steps and h.steps[step].status == "running"):
                self(StartHostStep(host, step))
            self(FinishHostStep(host, step, 0, 0.1))
        return self

    def finish_host(self, host: str) -> Release:
        """Run every remaining step of ``host`` to success."""
        h = self.state.hosts[host]
        nxt = h.next_step()
        assert nxt is not None
        return self.run_steps(host, HOST_STEPS[HOST_STEPS.index(nxt) :])

    def activate(self, host: str) -> Release:
        """Run ``host`` through activate (inclusive); it stays running."""
        return self.run_steps(host, HOST_STEPS[: HOST_STEPS.index("activate") + 1])

    def fail(self, host: str, step: str = "health", reason: str = "503") -> Release:
        return self(FailHost(host, step, reason))

    def actions(self, **kw: bool) -> list[object]:
        return list(next_actions(self.state, **kw))


def scheduled(actions: Sequence[object]) -> list[str]:
    return [a.host for a in actions if isinstance(a, ScheduleHost)]


def apply(r: Release, actions: Sequence[object]) -> None:
    """Act on what the policy asked for, as the orchestrator and agents would (start the hosts)."""
    for a in actions:
        if isinstance(a, ScheduleHost) and r.state.hosts[a.host].status == "waiting":
            r.start(a.host)
