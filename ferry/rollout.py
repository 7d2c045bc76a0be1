"""Rollout policy: what work a release needs next, decided from its state alone.

Pure. The orchestrator calls ``next_actions`` after every event of a release and
publishes what it returns; work messages are de-duplicated by id, so asking for the
same work twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.release import Fail, ReleaseState, Succeed


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
    command: Succeed | Fail


Action = ScheduleBuild | ScheduleHost | ScheduleRollback | Finish


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
    if not running and not waiting:
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


def _failure_reason(state: ReleaseState, failed: list[str]) -> str:
    parts = []
    for name in failed:
        h = state.hosts[name]
        parts.append(f"{name}: {h.failure}")
    return f"{len(failed)} of {len(state.hosts)} host(s) failed: " + "; ".join(parts)
