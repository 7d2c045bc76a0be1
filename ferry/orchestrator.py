"""Reactions of the release state machine: after each event, schedule what the history calls for.

Every decision is made from the release's own event history (loaded fresh), never from
memory, so any number of orchestrators may run and any may crash: work messages are
de-duplicated by id and terminal events are appended with optimistic concurrency.

A timed canary pause is a work item on ``ferry.work.timer`` (one per pause, by message id)
that the timer consumer naks with a delay until ``resume_at`` has passed, then resumes the
release; the periodic reconciler resumes any pause whose item was lost.

Host work goes to the host's agent group (``ferry.work.host.<group>.deploy``), looked up with
``group_of``; work for a group without a running agent waits in the queue, and the reconciler
warns about it once it has waited longer than ``STALE_AFTER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from nats.aio.msg import Msg

from ferry.agentgroups import DEFAULT_GROUP, host_work
from ferry.bus import WORK_PREFIX, WORK_STREAM, Bus
from ferry.errors import ConcurrencyError, InvariantViolation
from ferry.events import Event, utcnow
from ferry.eventstore import EVENTS_STREAM, SUBJECT_PREFIX, release_of
from ferry.release import TIMER, Resume, decide, replay
from ferry.rollout import Finish, ResumeAt, ScheduleBuild, ScheduleHost, ScheduleRollback, next_actions
from ferry.worker import Permanent, Transient, body, run_consumer

log = logging.getLogger("ferry.orchestrator")

BUILD_WORK = "build"
TIMER_WORK = "timer"
MAX_TIMER_DELAY = 30.0  # re-check a long pause at least this often (cheap: one history load)
STALE_AFTER = timedelta(minutes=3)

GroupOf = Callable[[str], str]
"""Host name -> its agent group (a blocking look-up, run in a thread; unknown hosts: "default")."""


def default_group(host: str) -> str:
    """The look-up without a database: every host is in the default group."""
    return DEFAULT_GROUP


class _Groups:
    """``group_of`` asked at most once per host during one reaction."""

    def __init__(self, group_of: GroupOf) -> None:
        self.group_of = group_of
        self.known: dict[str, str] = {}

    async def __call__(self, host: str) -> str:
        if host not in self.known:
            self.known[host] = await asyncio.to_thread(self.group_of, host)
        return self.known[host]


async def react(
    bus: Bus, release_id: str, *, include_running: bool = False, group_of: GroupOf = default_group
) -> None:
    """Load the release and carry out what the rollout policy asks for now."""
    groups = _Groups(group_of)
    for _ in range(10):
        history = [s.event for s in await bus.events.load(release_id)]
        if not history:
            return
        state = replay(release_id, history)
        try:
            for action in next_actions(state, include_running=include_running):
                match action:
                    case ScheduleBuild():
                        await bus.publish_work(BUILD_WORK, f"build:{release_id}", {"release_id": release_id})
                    case ScheduleHost(host=host):
                        await bus.publish_work(
                            host_work(await groups(host), "deploy"),
                            f"deploy:{release_id}:{host}",
                            {"release_id": release_id, "host": host},
                        )
                    case ScheduleRollback(host=host):
                        await bus.publish_work(
                            host_work(await groups(host), "rollback"),
                            f"rollback:{release_id}:{host}",
                            {"release_id": release_id, "host": host},
                        )
                    case Finish(command=command):
                        events = decide(state, command, utcnow())
                        await bus.events.append(release_id, events, state.version)
                        log.info("release decided", extra={"release_id": release_id, "type": events[0].type})
                    case ResumeAt(at=at):
                        now = utcnow()
                        if now >= at:
                            events = decide(state, Resume(by=TIMER), now)
                            await bus.events.append(release_id, events, state.version)
                            log.info("pause ran out; resumed", extra={"release_id": release_id})
                        else:
                            await bus.publish_work(
                                TIMER_WORK,
                                f"timer:{release_id}:{state.version}",
                                {"release_id": release_id, "at": at.isoformat()},
                            )
            return
        except ConcurrencyError:
            continue  # someone appended meanwhile: decide again from the new history
        except InvariantViolation as exc:
            log.info("nothing to do", extra={"release_id": release_id, "why": exc.message})
            return


async def resume_when_due(bus: Bus, release_id: str, group_of: GroupOf = default_group) -> None:
    """Handle one timer work item: nak it until the pause runs out, then resume the release."""
    history = [s.event for s in await bus.events.load(release_id)]
    state = replay(release_id, history)
    if state.status == "paused" and state.resume_at is not None:
        left = (state.resume_at - utcnow()).total_seconds()
        if left > 0:
            raise Transient(
                f"pause runs until {state.resume_at.isoformat()}", delay=min(left, MAX_TIMER_DELAY)
            )
        await react(bus, release_id, group_of=group_of)
        # a concurrent writer may have won; what matters is that the pause is over
        after = replay(release_id, [s.event for s in await bus.events.load(release_id)])
        if after.status == "paused":
            raise Transient("still paused after the timer ran out", delay=1.0)


async def on_timer(bus: Bus, msg: Msg, group_of: GroupOf = default_group) -> None:
    release_id = body(msg).get("release_id")
    if not isinstance(release_id, str) or not release_id:
        raise Permanent("timer work without a release_id")
    await resume_when_due(bus, release_id, group_of)


async def reconcile(bus: Bus, group_of: GroupOf = default_group) -> int:
    """Re-run reactions for every unfinished release; re-ask for hosts whose work went quiet."""
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=f"{SUBJECT_PREFIX}.>")
    subjects = list((info.state.subjects or {}).keys())
    touched = 0
    for subject in subjects:
        last = await bus.js.get_last_msg(EVENTS_STREAM, subject)
        kind = (last.headers or {}).get("Ferry-Type", "")
        if kind in ("release.succeeded", "release.failed", "release.cancelled", "release.rejected"):
            continue
        rid = release_of(subject)
        history = await bus.events.load(rid)
        quiet = utcnow() - history[-1].event.at if history else timedelta(0)
        stale = quiet > STALE_AFTER
        if stale:
            await _warn_waiting(rid, [s.event for s in history], quiet, group_of)
        await react(bus, rid, include_running=stale, group_of=group_of)
        touched += 1
    return touched


async def _warn_waiting(release_id: str, history: list[Event], quiet: timedelta, group_of: GroupOf) -> None:
    """Host work asked for in a release quiet for longer than STALE_AFTER has found no agent:
    most likely no agent of the host's group is running."""
    groups = _Groups(group_of)
    for action in next_actions(replay(release_id, history)):
        if isinstance(action, ScheduleHost | ScheduleRollback):
            log.warning(
                "host work waiting; is an agent of its group running?",
                extra={
                    "release_id": release_id,
                    "host": action.host,
                    "agent_group": await groups(action.host),
                    "waited": round(quiet.total_seconds()),
                },
            )


async def run(
    bus: Bus, stop: asyncio.Event, *, reconcile_every: float = 60.0, group_of: GroupOf = default_group
) -> None:
    """Follow the event stream with a durable consumer and react; reconcile periodically."""

    async def on_event(msg: Msg) -> None:
        await react(bus, release_of(msg.subject), group_of=group_of)

    async def reconciler() -> None:
        while not stop.is_set():
            try:
                await reconcile(bus, group_of)
            except Exception:
                log.exception("reconcile failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), reconcile_every)

    async def timers() -> None:
        while not stop.is_set():
            try:
                await run_consumer(
                    bus.js,
                    WORK_STREAM,
                    "orchestrator-timer",
                    f"{WORK_PREFIX}.{TIMER_WORK}",
                    lambda msg: on_timer(bus, msg, group_of),
                    stop,
                    concurrency=8,
                    ack_wait=30,
                )
            except Exception:
                log.exception("timer consumer failed; restarting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    task = asyncio.create_task(reconciler())
    timer_task = asyncio.create_task(timers())
    try:
        await run_consumer(
            bus.js,
            EVENTS_STREAM,
            "orchestrator",
            f"{SUBJECT_PREFIX}.>",
            on_event,
            stop,
            concurrency=8,
            ack_wait=30,
        )
    finally:
        for t in (task, timer_task):
            t.cancel()
        for t in (task, timer_task):
            with contextlib.suppress(asyncio.CancelledError):
                await t
