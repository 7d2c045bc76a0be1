"""The release aggregate: state rebuilt from events, and decisions that guard its invariants.

Pure: no I/O. ``evolve(state, event)`` folds one event; ``decide(state, command, now)``
returns the events a command produces or raises ``InvariantViolation``.
Invariants: nothing follows a terminal event; a host's steps run in order; no host is
activated twice in one release; no host step before an artifact exists; nothing starts
while a canary is paused, and a paused release resumes at most once.

Versions count per subject (see ``ferry.infra.eventstore``): release-level events are numbered by
``ReleaseState.version``, each host's events by its ``HostState.version``, so hosts append
without contending. ``guards_whole_release`` names the events whose decision depends on the
whole release (every release-level event, a host's first step and its switch): they are
appended only if nothing at all was appended to the release since the writer read it. A
host's other events depend on that host alone; such an event may land after a terminal
event another writer appended meanwhile (a step that had already started finishing), but
never a host's first step nor its switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, TypedDict

from ferry.domain.errors import InvariantViolation, SelfApproval
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
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "rejected"})
HostStatus = Literal["waiting", "running", "succeeded", "failed", "rolled_back"]


@dataclass(frozen=True)
class StepState:
    status: Literal["running", "succeeded", "failed"]
    started_at: datetime
    exit_code: int | None = None
    duration: float | None = None


@dataclass(frozen=True)
class HostState:
    status: HostStatus = "waiting"
    steps: dict[str, StepState] = field(default_factory=dict)
    activated: bool = False
    previous_release: str | None = None
    failure: str | None = None
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
    format: str
    reused: bool


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
    build_started: bool = False
    hosts: dict[str, HostState] = field(default_factory=dict)
    reason: str | None = None
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    paused_at: datetime | None = None
    resume_at: datetime | None = None
    resumed_by: str | None = None
    cancel_requested_by: str | None = None
    cancel_reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

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
            return replace(s, status="building", build_started=True)
        case SourceFetched():
            return replace(s, commit=event.commit)
        case BuildHookFinished():
            return s
        case ArtifactPackaged():
            art = Artifact(event.digest, event.size, event.format, event.reused)
            return replace(s, artifact=art, status="deploying")
        case BuildFailed():
            return replace(
                s, status="failed", reason=f"build {event.stage} failed: {event.reason}", finished_at=event.at
            )
        case HostStepStarted():
            h = s.hosts[event.host]
            steps = dict(h.steps)
            steps[event.step] = StepState("running", event.at)
            return _with_host(s, event.host, replace(h, status="running", steps=steps))
        case HostStepFinished():
            h = s.hosts[event.host]
            steps = dict(h.steps)
            prev = steps.get(event.step)
            started = prev.started_at if prev else event.at
            ok = event.exit_code == 0
            steps[event.step] = StepState(
                "succeeded" if ok else "failed", started, event.exit_code, event.duration
            )
            activated = h.activated or (event.step == "activate" and ok)
            release_dir = h.release_dir
            if event.step == "upload" and ok:
                kept = event.detail.get("release_dir")
                release_dir = kept if isinstance(kept, str) else None
            previous = h.previous_release
            if event.step == "activate" and ok:
                p = event.detail.get("previous")
                previous = p if isinstance(p, str) else None
            done = ok and event.step == HOST_STEPS[-1] and h.status == "running"
            return _with_host(
                s,
                event.host,
                replace(
                    h,
                    steps=steps,
                    activated=activated,
                    previous_release=previous,
                    release_dir=release_dir,
                    status="succeeded" if done else h.status,
                ),
            )
        case HostFailed():
            h = s.hosts[event.host]
            return _with_host(s, event.host, replace(h, status="failed", failure=event.reason))
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
            return replace(s, status="paused", paused_at=event.at, resume_at=event.resume_at)
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
    raise InvariantViolation(f"unknown event type {event.type!r}")


def replay(release_id: str, events: Iterable[Event]) -> ReleaseState:
    """Rebuild a release's state from its history."""
    state = ReleaseState(release_id)
    for event in events:
        state = evolve(state, event)
    return state


# --- commands ------------------------------------------------------------------
@dataclass(frozen=True)
class RequestRelease:
    project: str
    environment: str
    ref: str
    requested_by: str
    plan: Plan


@dataclass(frozen=True)
class Approve:
    by: str


@dataclass(frozen=True)
class Reject:
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Cancel:
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Pause:
    """Hold the rollout after the canary batch (the rollout policy asks for it)."""

    reason: str = "canary batch succeeded"


@dataclass(frozen=True)
class Resume:
    """Go on after a pause: ``by`` a user, or ``TIMER`` once ``resume_at`` has passed."""

    by: str


TIMER = "timer"


@dataclass(frozen=True)
class StartBuild:
    builder: str = ""


@dataclass(frozen=True)
class RecordSource:
    commit: str
    duration: float = 0.0


@dataclass(frozen=True)
class RecordHook:
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str = ""


@dataclass(frozen=True)
class RecordArtifact:
    digest: str
    size: int
    format: Literal["zst", "gz", "none"]
    reused: bool = False
    log_digest: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class FailBuild:
    stage: Literal["fetch", "hooks", "package"]
    reason: str
    output_tail: str = ""
    log_digest: str | None = None


@dataclass(frozen=True)
class StartHostStep:
    host: str
    step: str
    agent: str = ""


@dataclass(frozen=True)
class FinishHostStep:
    host: str
    step: str
    exit_code: int
    duration: float
    output_tail: str = ""
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FailHost:
    host: str
    step: str
    reason: str
    code: str = "STEP_FAILED"


@dataclass(frozen=True)
class RollBackHost:
    host: str
    to_release: str | None
    output_tail: str = ""
    healthy: bool | None = None


@dataclass(frozen=True)
class Succeed:
    pass


@dataclass(frozen=True)
class Unlock:
    """An admin takes the environment from this release: it ends as failed, whatever runs.

    Hosts in flight stop at their next step; none starts or switches after this event.
    """

    by: str
    reason: str


@dataclass(frozen=True)
class Fail:
    reason: str


Command = (
    RequestRelease
    | Approve
    | Reject
    | Cancel
    | Pause
    | Resume
    | StartBuild
    | RecordSource
    | RecordHook
    | RecordArtifact
    | FailBuild
    | StartHostStep
    | FinishHostStep
    | FailHost
    | RollBackHost
    | Succeed
    | Fail
    | Unlock
)


class _Meta(TypedDict):
    release_id: str
    version: int
    at: datetime


def _host_meta(state: ReleaseState, host: str, now: datetime) -> _Meta:
    """The metadata of ``host``'s next event: numbered on the host's own subject."""
    return _Meta(release_id=state.release_id, version=state.host(host).version + 1, at=now)


def guards_whole_release(event: Event) -> bool:
    """Whether ``event`` may be appended only if nothing else was appended to its release meanwhile.

    Release-level events decide from every host's state; a host's first step must not start
    past a pause, cancel or end, and its switch must not race a cancel. Every other host
    event depends on its own host's history only.
    """
    if host_of(event) is None:
        return True
    return isinstance(event, HostStepStarted) and event.step in (HOST_STEPS[0], "activate")


def _guard(cond: bool, message: str, field_name: str | None = None) -> None:
    if not cond:
        raise InvariantViolation(message, field=field_name)


def decide(state: ReleaseState, command: Command, now: datetime) -> list[Event]:
    """The events ``command`` produces against ``state``, or InvariantViolation."""
    base = _Meta(release_id=state.release_id, version=state.version + 1, at=now)
    if isinstance(command, RequestRelease):
        _guard(state.status == "new", "release already requested")
        _guard(len(command.plan.hosts) > 0, "an environment needs at least one host", "hosts")
        return [
            ReleaseRequested(
                **base,
                project=command.project,
                environment=command.environment,
                ref=command.ref,
                requested_by=command.requested_by,
                plan=command.plan,
            )
        ]
    _guard(state.status != "new", "release does not exist")
    _guard(not state.terminal, f"release is already {state.status}")
    match command:
        case Approve():
            _guard(state.status == "awaiting_approval", "release is not awaiting approval")
            if command.by == state.requested_by and not (state.plan and state.plan.allow_self_approval):
                raise SelfApproval(f"{command.by!r} requested this release; another deployer must approve it")
            return [ReleaseApproved(**base, by=command.by)]
        case Reject():
            _guard(state.status == "awaiting_approval", "release is not awaiting approval")
            return [ReleaseRejected(**base, by=command.by, reason=command.reason)]
        case Cancel():
            return _cancel(state, command, base)
        case Pause():
            return [_pause(state, command, base, now)]
        case Resume():
            _guard(state.status == "paused", f"release is not paused (it is {state.status})")
            if command.by == TIMER:
                _guard(
                    state.resume_at is not None and now >= state.resume_at,
                    "the pause has no timer, or its time has not come yet",
                )
            return [ReleaseResumed(**base, by=command.by)]
        case StartBuild():
            _guard(state.status == "queued", f"cannot build a release that is {state.status}")
            return [BuildStarted(**base, builder=command.builder)]
        case RecordSource():
            _guard(state.status == "building", "no build in progress")
            _guard(state.commit is None, "source already fetched")
            return [SourceFetched(**base, commit=command.commit, duration=command.duration)]
        case RecordHook():
            _guard(state.status == "building" and state.commit is not None, "no fetched source to build")
            return [
                BuildHookFinished(
                    **base,
                    index=command.index,
                    command=command.command,
                    exit_code=command.exit_code,
                    duration=command.duration,
                    output_tail=command.output_tail,
                )
            ]
        case RecordArtifact():
            _guard(state.status == "building" and state.commit is not None, "no fetched source to package")
            _guard(state.artifact is None, "artifact already packaged")
            return [
                ArtifactPackaged(
                    **base,
                    digest=command.digest,
                    size=command.size,
                    format=command.format,
                    reused=command.reused,
                    log_digest=command.log_digest,
                    duration=command.duration,
                )
            ]
        case FailBuild():
            _guard(state.status == "building", "no build in progress")
            return [
                BuildFailed(
                    **base,
                    stage=command.stage,
                    reason=command.reason,
                    output_tail=command.output_tail,
                    log_digest=command.log_digest,
                )
            ]
        case StartHostStep():
            _guard(state.artifact is not None, "no artifact yet: a host step needs a packaged artifact")
            _guard(command.step in HOST_STEPS, f"unknown step {command.step!r}", "step")
            h = state.host(command.host)
            _guard(h.status in ("waiting", "running"), f"host {command.host} is already {h.status}")
            _guard(state.status != "cancelling", "release is cancelling: no step starts now", "step")
            if h.status == "waiting":
                _guard(
                    state.status not in ("paused", "cancelling"),
                    f"release is {state.status}: no host starts now",
                    "host",
                )
                _guard(
                    state.was_paused
                    or state.plan is None
                    or state.plan.strategy != "canary"
                    or command.host in canary_hosts(state),
                    f"host {command.host} waits for the canary pause",
                    "host",
                )
            expected = h.next_step()
            _guard(
                command.step == expected,
                f"host {command.host}: step {command.step} out of order (next is {expected})",
                "step",
            )
            if command.step == "activate":
                _guard(not h.activated, f"host {command.host} already activated in this release")
            return [
                HostStepStarted(
                    **_host_meta(state, command.host, now),
                    host=command.host,
                    step=command.step,
                    agent=command.agent,
                )
            ]
        case FinishHostStep():
            h = state.host(command.host)
            _guard(h.status in ("waiting", "running"), f"host {command.host} is already {h.status}")
            s = h.steps.get(command.step)
            _guard(
                s is not None and s.status == "running",
                f"host {command.host}: step {command.step} is not running",
                "step",
            )
            return [
                HostStepFinished(
                    **_host_meta(state, command.host, now),
                    host=command.host,
                    step=command.step,
                    exit_code=command.exit_code,
                    duration=command.duration,
                    output_tail=command.output_tail,
                    detail=dict(command.detail),
                )
            ]
        case FailHost():
            _guard(state.artifact is not None, "no artifact yet: a host cannot fail before one exists")
            h = state.host(command.host)
            _guard(h.status in ("waiting", "running"), f"host {command.host} is already {h.status}")
            return [
                HostFailed(
                    **_host_meta(state, command.host, now),
                    host=command.host,
                    step=command.step,
                    reason=command.reason,
                    code=command.code,
                )
            ]
        case RollBackHost():
            h = state.host(command.host)
            _guard(h.activated, f"host {command.host} was never activated; nothing to roll back")
            _guard(h.status != "rolled_back", f"host {command.host} already rolled back")
            return [
                HostRolledBack(
                    **_host_meta(state, command.host, now),
                    host=command.host,
                    to_release=command.to_release,
                    output_tail=command.output_tail,
                    healthy=command.healthy,
                )
            ]
        case Succeed():
            _guard(
                bool(state.hosts) and all(h.status == "succeeded" for h in state.hosts.values()),
                "not every host succeeded",
            )
            return [ReleaseSucceeded(**base)]
        case Unlock():
            return [
                ReleaseFailed(
                    **base, reason=f"environment lock force-released by {command.by}: {command.reason}"
                )
            ]
        case Fail():
            running = [n for n, h in state.hosts.items() if h.status == "running"]
            _guard(not running, f"hosts still running: {', '.join(sorted(running))}")
            return [ReleaseFailed(**base, reason=command.reason)]
    raise InvariantViolation(f"unknown command {type(command).__name__}")


def canary_hosts(state: ReleaseState) -> tuple[str, ...]:
    """The hosts of the canary batch (plan order), or () when the plan is not a canary."""
    plan = state.plan
    if plan is None or plan.strategy != "canary":
        return ()
    return plan.hosts[: plan.canary_size]


def _pause(state: ReleaseState, command: Pause, base: _Meta, now: datetime) -> ReleasePaused:
    plan = state.plan
    _guard(plan is not None and plan.strategy == "canary", "only a canary rollout pauses")
    assert plan is not None
    _guard(state.status == "deploying", f"cannot pause a release that is {state.status}")
    _guard(not state.was_paused, "the canary pause already happened")
    canary = canary_hosts(state)
    _guard(
        all(state.hosts[h].status in ("succeeded", "failed", "rolled_back") for h in canary),
        "the canary batch is not done",
    )
    _guard(not any(h.status == "running" for h in state.hosts.values()), "hosts still running")
    _guard(any(h.status == "waiting" for h in state.hosts.values()), "no host left to pause for")
    failed = [n for n, h in state.hosts.items() if h.failure is not None]
    _guard(len(failed) <= plan.max_failures, "the failure threshold is crossed: the release must fail")
    done = tuple(n for n in canary if state.hosts[n].status == "succeeded")
    resume_at = None if plan.canary_pause is None else now + timedelta(seconds=plan.canary_pause)
    return ReleasePaused(**base, hosts_done=done, resume_at=resume_at, reason=command.reason)


def _cancel(state: ReleaseState, command: Cancel, base: _Meta) -> list[Event]:
    """A cancel is accepted at any moment before the end; every host ends on exactly one release.

    Nothing in flight and nothing switched: ``release.cancelled`` at once. Otherwise
    ``release.cancel_requested``: no step starts any more, each host in flight stops after the
    step it runs (its agent records it failed with ``CANCELLED``), every host that switched —
    or was switching when the cancel came — is rolled back to its previous release (restarted
    and health-checked, whatever ``rollback_on_failure`` says: the operator asked to undo), and
    then ``release.cancelled`` ends it. So a host serves its old release, or (when it had none
    to go back to) the new one, and its events say which.
    """
    switched = [n for n, h in state.hosts.items() if h.activated and h.status != "rolled_back"]
    running = [n for n, h in state.hosts.items() if h.status == "running"]
    if state.status == "cancelling":
        _guard(not running and not switched, "already cancelling: hosts are being stopped or rolled back")
        return [
            ReleaseCancelled(
                **base,
                by=state.cancel_requested_by or command.by,
                reason=state.cancel_reason or command.reason,
            )
        ]
    if state.status == "paused" or running or switched:
        return [ReleaseCancelRequested(**base, by=command.by, reason=command.reason)]
    return [ReleaseCancelled(**base, by=command.by, reason=command.reason)]
