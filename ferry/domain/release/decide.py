"""``decide``: the events a command produces against a release's state, guarding its invariants.

Pure: no I/O. ``decide(state, command, now)`` returns the events or raises ``InvariantViolation``.
Invariants: nothing follows a terminal event; a host's steps run in order; no host is activated
twice in one release; no host step before an artifact exists; nothing starts while a canary is
paused, and a paused release resumes at most once.

``guards_whole_release`` names the events whose decision depends on the whole release (every
release-level event, a host's first step and its switch): they are appended only if nothing at
all was appended to the release since the writer read it. A host's other events depend on that
host alone; such an event may land after a terminal event another writer appended meanwhile (a
step that had already started finishing), but never a host's first step nor its switch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

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
from ferry.domain.release.commands import (
    TIMER,
    Approve,
    Cancel,
    Command,
    Fail,
    FailBuild,
    FailHost,
    FinishHostStep,
    Pause,
    RecordArtifact,
    RecordHook,
    RecordSource,
    Reject,
    RequestRelease,
    Resume,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    Unlock,
)
from ferry.domain.release.state import ReleaseState
from ferry.domain.strategies import strategy_of


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
                canary = canary_hosts(state)
                _guard(
                    state.was_paused or not canary or command.host in canary,
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
    return () if plan is None else strategy_of(plan).canary(plan)


def _pause(state: ReleaseState, command: Pause, base: _Meta, now: datetime) -> ReleasePaused:
    plan = state.plan
    canary = canary_hosts(state)
    _guard(plan is not None and bool(canary), "only a canary rollout pauses")
    assert plan is not None
    _guard(state.status == "deploying", f"cannot pause a release that is {state.status}")
    _guard(not state.was_paused, "the canary pause already happened")
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
