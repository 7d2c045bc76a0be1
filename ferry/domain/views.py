"""The release as people read it: one view computed from ``ReleaseState`` alone.

Pure: no I/O. The API's ``GET /api/releases/{id}`` and the CLI's ``ferry release watch`` both
show ``release_view(state)``; neither reads events itself (``evolve`` is the only reader), so a
new event type changes what they show in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from ferry.domain.events import HOST_STEPS
from ferry.domain.release import HookRun, HostStatus, ReleaseState, Status
from ferry.domain.vocabulary import ArtifactFormat

StepViewStatus = Literal["waiting", "running", "succeeded", "failed"]
BuildViewStatus = Literal["waiting", "running", "succeeded", "failed", "cancelled"]
BUILD_VIEW_STATUSES: tuple[str, ...] = get_args(BuildViewStatus)


@dataclass(frozen=True)
class StepView:
    step: str
    status: StepViewStatus
    started_at: datetime | None = None
    duration: float | None = None
    exit_code: int | None = None
    output_tail: str = ""
    log_digest: str | None = None


@dataclass(frozen=True)
class HostView:
    name: str
    status: HostStatus
    failure: str | None
    steps: tuple[StepView, ...]
    """Every step of ``HOST_STEPS``, in order (``waiting`` until it starts)."""
    instant: str | None = None
    """A rollback that switched at once to a directory the host held: that release's id."""
    failed_step: str | None = None

    @property
    def done(self) -> int:
        """How many steps succeeded."""
        return sum(1 for s in self.steps if s.status == "succeeded")

    @property
    def current(self) -> StepView | None:
        """The step the host is at: the one it failed at, else the last one that started."""
        if self.status == "failed" and self.failed_step is not None:
            return StepView(self.failed_step, "failed")
        started = [s for s in self.steps if s.status != "waiting"]
        return started[-1] if started else None


@dataclass(frozen=True)
class ArtifactView:
    digest: str
    size: int
    format: ArtifactFormat
    reused: bool


@dataclass(frozen=True)
class BuildView:
    status: BuildViewStatus
    hooks: tuple[HookRun, ...]
    log_digest: str | None
    output_tail: str
    stage: str
    """Where the build is, in a few words (``fetching``, ``hook 2 exit 0``, ``packaged``...)."""


@dataclass(frozen=True)
class PauseView:
    paused_at: datetime
    hosts_done: tuple[str, ...]
    resume_at: datetime | None
    resumed_by: str | None


@dataclass(frozen=True)
class ReleaseView:
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: Status
    requested_by: str
    requested_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    artifact: ArtifactView | None
    build: BuildView
    hosts: tuple[HostView, ...]
    """The plan's hosts, in plan order."""
    pause: PauseView | None

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled", "rejected")


def _build(state: ReleaseState) -> BuildView:
    b = state.build
    status: BuildViewStatus = b.status
    if state.terminal and status in ("waiting", "running"):
        status = "cancelled"  # the release ended before its build did
    if status == "failed":
        stage = f"{b.failed_stage} failed"
    elif status == "succeeded":
        stage = "packaged"
    elif status == "running" and state.commit is None:
        stage = "fetching"
    elif status == "running" and b.hooks:
        stage = f"hook {b.hooks[-1].index + 1} exit {b.hooks[-1].exit_code}"
    elif status == "running":
        stage = "build hooks"
    else:
        stage = ""
    return BuildView(status, b.hooks, b.log_digest, b.output_tail, stage)


def _host(state: ReleaseState, name: str) -> HostView:
    h = state.hosts[name]
    steps = []
    for step in HOST_STEPS:
        s = h.steps.get(step)
        if s is None:
            steps.append(StepView(step, "waiting"))
        else:
            steps.append(
                StepView(step, s.status, s.started_at, s.duration, s.exit_code, s.output_tail, s.log_digest)
            )
    return HostView(name, h.status, h.failure, tuple(steps), h.release_dir, h.failed_step)


def release_view(state: ReleaseState) -> ReleaseView:
    """The release as its state tells it (plan order for hosts, ``HOST_STEPS`` order for steps)."""
    art = state.artifact
    artifact = None
    if art is not None:
        artifact = ArtifactView(art.digest, art.size, art.format, art.reused)
    pause = None
    if state.paused_at is not None:
        pause = PauseView(state.paused_at, state.hosts_done, state.resume_at, state.resumed_by)
    plan_hosts = state.plan.hosts if state.plan else ()
    return ReleaseView(
        id=state.release_id,
        project=state.project,
        environment=state.environment,
        ref=state.ref,
        commit=state.commit,
        status=state.status,
        requested_by=state.requested_by,
        requested_at=state.requested_at,
        finished_at=state.finished_at,
        reason=state.reason,
        artifact=artifact,
        build=_build(state),
        hosts=tuple(_host(state, name) for name in plan_hosts),
        pause=pause,
    )


def summary(view: ReleaseView) -> dict[str, object]:
    """The view's gist as plain JSON values: what the golden sequences (``tests/contract/sequences``)
    expect of the Python view and of the portal's JavaScript reducer alike."""
    return {
        "status": view.status,
        "commit": view.commit,
        "reason": view.reason,
        "artifact": None if view.artifact is None else view.artifact.digest,
        "build": {"status": view.build.status, "hooks": len(view.build.hooks)},
        "pause": None
        if view.pause is None
        else {"hosts_done": list(view.pause.hosts_done), "resumed_by": view.pause.resumed_by},
        "hosts": {
            h.name: {
                "status": h.status,
                "failure": h.failure,
                "instant": h.instant,
                "steps": {s.step: s.status for s in h.steps if s.status != "waiting"},
            }
            for h in view.hosts
        },
    }


def log_digests(state: ReleaseState) -> set[str]:
    """Every full log the release's state points at (the build's and each step's): the only logs
    its API may serve."""
    found = {state.build.log_digest} if state.build.log_digest else set()
    for h in state.hosts.values():
        found.update(s.log_digest for s in h.steps.values() if s.log_digest)
    return found
