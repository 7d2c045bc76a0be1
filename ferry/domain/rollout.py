"""Rollout policy: what work a release needs next, decided from its state alone.

Pure. The orchestrator calls ``next_actions`` after every event of a release and
publishes what it returns; work messages are de-duplicated by id, so asking for the
same work twice is harmless. How hosts are grouped (the canary before the pause, the
batches after it) is the plan's ``Strategy`` (``ferry.domain.strategies``, one registered
implementation per name); this module only reads what the strategy says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ferry.domain.events import Plan
from ferry.domain.release import Cancel, Fail, Pause, ReleaseState, Succeed
from ferry.domain.strategies import REGISTRY, Strategy, strategy_of

__all__ = [  # the strategies are re-exported: "rollout strategies" live behind this module's door too
    "REGISTRY",
    "Action",
    "Finish",
    "ResumeAt",
    "ScheduleBuild",
    "ScheduleHost",
    "ScheduleRollback",
    "Strategy",
    "batches",
    "failures",
    "next_actions",
    "strategy_of",
]


@dataclass(frozen=True)
class ScheduleBuild:
    pass


@dataclass(frozen=True)
class ScheduleHost:
    host: str


@dataclass(frozen=True)
class ScheduleRollback:
    host: str


@dataclass(frozen=True)
class Finish:
    """Append what the command decides: the release's end, or the canary pause."""

    command: Succeed | Fail | Cancel | Pause


@dataclass(frozen=True)
class ResumeAt:
    """The release is paused until ``at``; then resume it (``Resume(by=TIMER)``)."""

    at: datetime


Action = ScheduleBuild | ScheduleHost | ScheduleRollback | Finish | ResumeAt


def failures(state: ReleaseState) -> list[str]:
    """Hosts that failed in this release (whether or not they were rolled back since)."""
    return [name for name, h in state.hosts.items() if h.failure is not None]


def next_actions(state: ReleaseState, *, include_running: bool = False) -> list[Action]:
    """The work ``state`` calls for now. ``include_running`` also re-asks for hosts in flight
    (the reconciler uses it for work whose messages were lost)."""
    if state.terminal or state.plan is None:
        return []
    if state.status in ("new", "awaiting_approval"):
        return []
    if state.status in ("queued", "building"):
        return [ScheduleBuild()]
    plan = state.plan
    failed = failures(state)
    running = [n for n in plan.hosts if state.hosts[n].status == "running"]
    if state.status == "paused":
        return [ResumeAt(state.resume_at)] if state.resume_at is not None else []
    if state.status == "cancelling":
        # The operator cancelled a paused canary: undo every switched host, then end.
        if running:
            return [ScheduleHost(n) for n in running] if include_running else []
        to_undo = [
            n for n in plan.hosts if state.hosts[n].activated and state.hosts[n].status != "rolled_back"
        ]
        if to_undo:
            return [ScheduleRollback(n) for n in to_undo]
        return [Finish(Cancel(state.cancel_requested_by or "", state.cancel_reason))]
    if len(failed) > plan.max_failures:
        # Stop the rollout: let hosts in flight end, roll back the ones already switched, then fail.
        if running:
            return [ScheduleHost(n) for n in running] if include_running else []
        if plan.rollback_on_failure:
            to_roll = [
                n
                for n in plan.hosts
                if state.hosts[n].activated and state.hosts[n].status in ("succeeded", "failed")
            ]
            if to_roll:
                return [ScheduleRollback(n) for n in to_roll]
        return [Finish(Fail(_failure_reason(state, failed)))]
    waiting = [n for n in plan.hosts if state.hosts[n].status == "waiting"]
    strategy = strategy_of(plan)
    canary = strategy.canary(plan)
    if canary and not state.was_paused:
        if any(state.hosts[n].status in ("waiting", "running") for n in canary):
            waiting = [n for n in waiting if n in canary]
        elif waiting:
            return [Finish(Pause(_pause_reason(state, canary)))]
    elif strategy.gated(plan):
        waiting = _current_batch(state, strategy.batches(plan, _after(plan, canary)), waiting)
    if not running and not waiting and not any(state.hosts[n].status == "waiting" for n in plan.hosts):
        if failed:
            return [Finish(Fail(_failure_reason(state, failed)))]
        not_ok = [n for n in plan.hosts if state.hosts[n].status != "succeeded"]
        if not_ok:
            return [Finish(Fail(f"host(s) not succeeded: {', '.join(not_ok)}"))]
        return [Finish(Succeed())]
    slots = max(plan.concurrency, 1) - len(running)
    actions: list[Action] = [ScheduleHost(n) for n in running] if include_running else []
    actions += [ScheduleHost(n) for n in waiting[: max(slots, 0)]]
    return actions


def _after(plan: Plan, canary: tuple[str, ...]) -> list[str]:
    return [n for n in plan.hosts if n not in canary]


def batches(state: ReleaseState) -> list[tuple[str, ...]]:
    """The rollout's batches in order (the canary batch first, when there is one)."""
    plan = state.plan
    if plan is None:
        return []
    strategy = strategy_of(plan)
    canary = strategy.canary(plan)
    return ([canary] if canary else []) + strategy.batches(plan, _after(plan, canary))


def _current_batch(state: ReleaseState, batches: list[tuple[str, ...]], waiting: list[str]) -> list[str]:
    """The waiting hosts of the first batch not yet done: a batch starts when the one before ended."""
    for batch in batches:
        if any(state.hosts[n].status in ("waiting", "running") for n in batch):
            return [n for n in waiting if n in batch]
    return []


def _pause_reason(state: ReleaseState, canary: tuple[str, ...]) -> str:
    ok = sum(1 for n in canary if state.hosts[n].status == "succeeded")
    return (
        f"canary batch done: {ok} of {len(canary)} host(s) succeeded, {len(state.hosts) - len(canary)} to go"
    )


def _failure_reason(state: ReleaseState, failed: list[str]) -> str:
    parts = []
    for name in failed:
        h = state.hosts[name]
        parts.append(f"{name}: {h.failure}")
    return f"{len(failed)} of {len(state.hosts)} host(s) failed: " + "; ".join(parts)
