"""A release's state, and ``evolve``: the one place that turns a release event into state.

Pure: no I/O. Every reader of release events (the command loop, the read-model projector, the
API view and the CLI's watch through ``ferry.domain.views``, the webhook texts) folds them with
``evolve`` and reads the state it returns; the portal's reducer mirrors it in JavaScript and
runs the same golden sequences (``tests/contract/sequences``). An event type ``evolve`` does
not handle raises ``UnknownEventType``: a new event type fails loudly until it is handled here.

Versions count per subject (see ``ferry.infra.eventstore``): release-level events are numbered
by ``ReleaseState.version``, each host's events by its ``HostState.version``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, get_args

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import (
    HOST_STEPS,
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    Event,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    Plan,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseCancelRequested,
    ReleaseFailed,
    ReleasePaused,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseResumed,
    ReleaseSucceeded,
    SourceFetched,
    host_of,
)
from ferry.domain.vocabulary import ArtifactFormat

Status = Literal[
    "new",
    "awaiting_approval",
    "queued",
    "building",
    "deploying",
    "paused",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
]
STATUSES: tuple[str, ...] = get_args(Status)
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "rejected"})
HostStatus = Literal["waiting", "running", "succeeded", "failed", "rolled_back"]
HOST_STATUSES: tuple[str, ...] = get_args(HostStatus)
StepStatus = Literal["running", "succeeded", "failed"]
BuildStatus = Literal["waiting", "running", "succeeded", "failed"]
BUILD_STATUSES: tuple[str, ...] = get_args(BuildStatus)


class UnknownEventType(InvariantViolation):
    """An event type ``evolve`` does not handle: ferry refuses to guess what it means."""

    code = "UNKNOWN_EVENT_TYPE"


@dataclass(frozen=True)
class StepState:
    status: StepStatus
    started_at: datetime
    exit_code: int | None = None
    duration: float | None = None
    output_tail: str = ""
    log_digest: str | None = None
    """The step's full log in the object store (``detail.log_digest`` of its end)."""


@dataclass(frozen=True)
class HostState:
    status: HostStatus = "waiting"
    steps: dict[str, StepState] = field(default_factory=dict)
    activated: bool = False
    previous_release: str | None = None
    failure: str | None = None
    failed_step: str | None = None
    release_dir: str | None = None
    """Set when the host switched instantly to a directory it already held (a rollback)."""
    version: int = 0
    """The number of the host's last event (on its own subject)."""

    def next_step(self) -> str | None:
        """The first step not yet finished successfully, or None when all are."""
        for step in HOST_STEPS:
            s = self.steps.get(step)
            if s is None or s.status != "succeeded":
                return step
        return None


@dataclass(frozen=True)
class Artifact:
    digest: str
    size: int
    format: ArtifactFormat
    reused: bool


@dataclass(frozen=True)
class HookRun:
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str = ""


@dataclass(frozen=True)
class BuildState:
    status: BuildStatus = "waiting"
    hooks: tuple[HookRun, ...] = ()
    failed_stage: str | None = None
    log_digest: str | None = None
    output_tail: str = ""


@dataclass(frozen=True)
class ReleaseState:
    release_id: str
    version: int = 0
    status: Status = "new"
    project: str = ""
    environment: str = ""
    ref: str = ""
    requested_by: str = ""
    plan: Plan | None = None
    commit: str | None = None
    artifact: Artifact | None = None
    build: BuildState = BuildState()
    hosts: dict[str, HostState] = field(default_factory=dict)
    reason: str | None = None
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    paused_at: datetime | None = None
    resume_at: datetime | None = None
    hosts_done: tuple[str, ...] = ()
    """The canary hosts that succeeded when the release paused."""
    resumed_by: str | None = None
    cancel_requested_by: str | None = None
    cancel_reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def build_started(self) -> bool:
        return self.build.status != "waiting"

    @property
    def was_paused(self) -> bool:
        """The canary pause already happened (a release pauses at most once)."""
        return self.paused_at is not None

    def host(self, name: str) -> HostState:
        try:
            return self.hosts[name]
        except KeyError:
            raise InvariantViolation(f"host {name!r} is not part of this release", field="host") from None


def _with_host(state: ReleaseState, name: str, host: HostState) -> ReleaseState:
    hosts = dict(state.hosts)
    hosts[name] = host
    return replace(state, hosts=hosts)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def evolve(state: ReleaseState, event: Event) -> ReleaseState:
    """Fold one event into the state (trusts the event: validation lives in decide)."""
    host = host_of(event)
    if host is None:
        s = replace(state, version=event.version)
    else:
        s = _with_host(state, host, replace(state.hosts[host], version=event.version))
    match event:
        case ReleaseRequested():
            return replace(
                s,
                status="awaiting_approval" if event.plan.require_approval else "queued",
                project=event.project,
                environment=event.environment,
                ref=event.ref,
                requested_by=event.requested_by,
                plan=event.plan,
                hosts={h: HostState() for h in event.plan.hosts},
                requested_at=event.at,
            )
        case ReleaseApproved():
            return replace(s, status="queued")
        case ReleaseRejected():
            return replace(s, status="rejected", reason=event.reason or "rejected", finished_at=event.at)
        case BuildStarted():
            return replace(s, status="building", build=replace(s.build, status="running"))
        case SourceFetched():
            return replace(s, commit=event.commit)
        case BuildHookFinished():
            hook = HookRun(event.index, event.command, event.exit_code, event.duration, event.output_tail)
            return replace(s, build=replace(s.build, hooks=(*s.build.hooks, hook)))
        case ArtifactPackaged():
            art = Artifact(event.digest, event.size, event.format, event.reused)
            build = replace(s.build, status="succeeded", log_digest=event.log_digest)
            return replace(s, artifact=art, status="deploying", build=build)
        case BuildFailed():
            build = replace(
                s.build,
                status="failed",
                failed_stage=event.stage,
                log_digest=event.log_digest,
                output_tail=event.output_tail,
            )
            reason = f"build {event.stage} failed: {event.reason}"
            return replace(s, status="failed", reason=reason, finished_at=event.at, build=build)
        case HostStepStarted():
            h = s.hosts[event.host]
            steps = dict(h.steps)
            steps[event.step] = StepState("running", event.at)
            return _with_host(s, event.host, replace(h, status="running", steps=steps))
        case HostStepFinished():
            return _with_host(s, event.host, _finish_step(s.hosts[event.host], event))
        case HostFailed():
            h = s.hosts[event.host]
            failed = replace(h, status="failed", failure=event.reason, failed_step=event.step)
            return _with_host(s, event.host, failed)
        case HostRolledBack():
            h = s.hosts[event.host]
            failure = h.failure
            if event.healthy is False:  # never a quiet "rolled back": the old release is unhealthy too
                unhealthy = (
                    f"rolled back to {event.to_release}, which failed its health check"
                    if event.to_release
                    else "could not be rolled back: it still runs this release"
                )
                failure = f"{failure}; {unhealthy}" if failure else unhealthy
            return _with_host(s, event.host, replace(h, status="rolled_back", failure=failure))
        case ReleasePaused():
            return replace(
                s, status="paused", paused_at=event.at, resume_at=event.resume_at, hosts_done=event.hosts_done
            )
        case ReleaseResumed():
            return replace(s, status="deploying", resumed_by=event.by)
        case ReleaseCancelRequested():
            return replace(s, status="cancelling", cancel_requested_by=event.by, cancel_reason=event.reason)
        case ReleaseSucceeded():
            return replace(s, status="succeeded", finished_at=event.at)
        case ReleaseFailed():
            return replace(s, status="failed", reason=event.reason, finished_at=event.at)
        case ReleaseCancelled():
            return replace(s, status="cancelled", reason=event.reason or "cancelled", finished_at=event.at)
    raise UnknownEventType(f"unknown event type {event.type!r}: evolve does not handle it")


def _finish_step(h: HostState, event: HostStepFinished) -> HostState:
    steps = dict(h.steps)
    prev = steps.get(event.step)
    started = prev.started_at if prev else event.at
    ok = event.exit_code == 0
    steps[event.step] = StepState(
        "succeeded" if ok else "failed",
        started,
        event.exit_code,
        event.duration,
        event.output_tail,
        _str(event.detail.get("log_digest")),
    )
    release_dir = h.release_dir
    if event.step == "upload" and ok:
        release_dir = _str(event.detail.get("release_dir"))
    previous = h.previous_release
    if event.step == "activate" and ok:
        previous = _str(event.detail.get("previous"))
    done = ok and event.step == HOST_STEPS[-1] and h.status == "running"
    return replace(
        h,
        steps=steps,
        activated=h.activated or (event.step == "activate" and ok),
        previous_release=previous,
        release_dir=release_dir,
        status="succeeded" if done else h.status,
    )


def replay(release_id: str, events: Iterable[Event]) -> ReleaseState:
    """Rebuild a release's state from its history."""
    state = ReleaseState(release_id)
    for event in events:
        state = evolve(state, event)
    return state
