"""Reactions of the release state machine: after each event, schedule what the history calls for.

Every decision is made from the release's own event history (caught up from the store by
``bus.histories`` before each reaction, so it costs what was appended since), never from
another process's memory, so any number of orchestrators may run and any may crash: work messages are
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
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from ferry.domain.agentgroups import DEFAULT_GROUP, host_work
from ferry.domain.errors import ConcurrencyError, InvariantViolation
from ferry.domain.events import Event, utcnow
from ferry.domain.release import TIMER, Resume, decide, replay
from ferry.domain.rollout import Finish, ResumeAt, ScheduleBuild, ScheduleHost, ScheduleRollback, next_actions
from ferry.infra import metrics, tracing
from ferry.infra.bus import WORK_PREFIX, WORK_STREAM, Bus
from ferry.infra.commands import append_decided
from ferry.infra.eventstore import EVENTS_STREAM, SUBJECT_PREFIX, release_of
from ferry.infra.worker import Permanent, Transient, body, run_consumer

log = logging.getLogger("ferry.infra.orchestrator")

BUILD_WORK = "build"
TIMER_WORK = "timer"
MAX_TIMER_DELAY = 30.0  # re-check a long pause at least this often (cheap: one history load)
STALE_AFTER = timedelta(minutes=3)
LOCK_GRACE = timedelta(seconds=60)
TERMINAL_TYPES = frozenset({"release.succeeded", "release.failed", "release.cancelled", "release.rejected"})

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
) -> int:
    """Carry out what the rollout policy asks for now; returns the sequence the decision was made at."""
    groups = _Groups(group_of)
    for _ in range(10):
        loaded = await bus.histories.get(release_id)
        state = loaded.state
        if state.status == "new":
            return loaded.last_seq
        if state.terminal:
            await hand_on(bus, state.project, state.environment, release_id, group_of)
            return loaded.last_seq
        lock = await bus.locks.join(state.project, state.environment, release_id)
        if lock.holder != release_id:
            return loaded.last_seq  # waits its turn: the holder's end hands the lock on
        token = lock.token
        try:
            for action in next_actions(state, include_running=include_running):
                match action:
                    case ScheduleBuild():
                        await bus.publish_work(
                            BUILD_WORK, f"build:{release_id}", {"release_id": release_id, "lock": token}
                        )
                    case ScheduleHost(host=host):
                        await bus.publish_work(
                            host_work(await groups(host), "deploy"),
                            f"deploy:{release_id}:{host}",
                            {"release_id": release_id, "host": host, "lock": token},
                        )
                    case ScheduleRollback(host=host):
                        await bus.publish_work(
                            host_work(await groups(host), "rollback"),
                            f"rollback:{release_id}:{host}",
                            {"release_id": release_id, "host": host, "lock": token},
                        )
                    case Finish(command=command):
                        events = decide(state, command, utcnow())
                        await append_decided(bus.histories, loaded, events)
                        log.info("release decided", extra={"release_id": release_id, "type": events[0].type})
                    case ResumeAt(at=at):
                        now = utcnow()
                        if now >= at:
                            events = decide(state, Resume(by=TIMER), now)
                            await append_decided(bus.histories, loaded, events)
                            log.info("pause ran out; resumed", extra={"release_id": release_id})
                        else:
                            await bus.publish_work(
                                TIMER_WORK,
                                f"timer:{release_id}:{state.version}",
                                {"release_id": release_id, "at": at.isoformat()},
                            )
            return loaded.last_seq
        except ConcurrencyError:
            continue  # someone appended meanwhile: decide again from what is new
        except InvariantViolation as exc:
            log.info("nothing to do", extra={"release_id": release_id, "why": exc.message})
            return loaded.last_seq
    return 0


async def hand_on(bus: Bus, project: str, environment: str, release_id: str, group_of: GroupOf) -> None:
    """A release ended: it leaves its environment's lock, and the next in line starts at once."""
    before, after = await bus.locks.leave(project, environment, release_id)
    if after.holder is not None and after.holder != before.holder:
        log.info(
            "environment handed on",
            extra={
                "release_id": after.holder,
                "after": release_id,
                "environment": f"{project}/{environment}",
            },
        )
        with tracing.continuing(await tracing.of_release(bus.events, after.holder)):  # its own trace
            await react(bus, after.holder, group_of=group_of)


async def resume_when_due(bus: Bus, release_id: str, group_of: GroupOf = default_group) -> None:
    """Handle one timer work item: nak it until the pause runs out, then resume the release."""
    state = await bus.histories.state(release_id)
    if state.status == "paused" and state.resume_at is not None:
        left = (state.resume_at - utcnow()).total_seconds()
        if left > 0:
            raise Transient(
                f"pause runs until {state.resume_at.isoformat()}", delay=min(left, MAX_TIMER_DELAY)
            )
        await react(bus, release_id, group_of=group_of)
        # a concurrent writer may have won; what matters is that the pause is over
        after = await bus.histories.state(release_id)
        if after.status == "paused":
            raise Transient("still paused after the timer ran out", delay=1.0)


async def on_timer(bus: Bus, msg: Msg, group_of: GroupOf = default_group) -> None:
    release_id = body(msg).get("release_id")
    if not isinstance(release_id, str) or not release_id:
        raise Permanent("timer work without a release_id")
    await resume_when_due(bus, release_id, group_of)


async def unfinished(bus: Bus) -> list[str]:
    """Releases whose release-level subject does not end with a terminal event."""
    release_ids: dict[str, str] = {}
    for pattern in (f"{SUBJECT_PREFIX}.*", f"{SUBJECT_PREFIX}.*.release"):  # legacy layout, current layout
        info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=pattern)
        for subject in (info.state.subjects or {}).keys():
            release_ids[release_of(subject)] = subject  # the current layout's subject wins
    found = []
    for rid, subject in release_ids.items():
        last = await bus.js.get_last_msg(EVENTS_STREAM, subject)
        if (last.headers or {}).get("Ferry-Type", "") not in TERMINAL_TYPES:
            found.append(rid)
    return found


async def release_stale_locks(bus: Bus, group_of: GroupOf = default_group) -> list[str]:
    """Hand on every environment lock (or queue place) whose release has ended or never began.

    A release joins the lock just before its first event is appended; one still without
    events after ``LOCK_GRACE`` was never created (its request failed half-way).
    """
    released = []
    now = utcnow()
    for lock in await bus.locks.all():
        places = ([(lock.holder, lock.since)] if lock.holder else []) + [
            (w.release_id, w.since) for w in lock.queue
        ]
        for rid, since in places:
            loaded = await bus.histories.get(rid)
            unknown = loaded.count == 0 and _older(since, now, LOCK_GRACE)
            if unknown or loaded.state.terminal:
                log.warning(
                    "released a stale environment lock"
                    if rid == lock.holder
                    else "dropped a stale queue place",
                    extra={"release_id": rid, "environment": f"{lock.project}/{lock.environment}"},
                )
                await hand_on(bus, lock.project, lock.environment, rid, group_of)
                released.append(rid)
    return released


def _older(since: str | None, now: datetime, age: timedelta) -> bool:
    try:
        return since is None or now - datetime.fromisoformat(since) > age
    except ValueError:
        return True


async def reconcile(bus: Bus, group_of: GroupOf = default_group) -> int:
    """Re-run reactions for every unfinished release; re-ask for hosts whose work went quiet;
    release environment locks whose holder has ended or never began."""
    touched = 0
    await release_stale_locks(bus, group_of)
    for rid in await unfinished(bus):
        history = await bus.events.load(rid)
        quiet = utcnow() - max(s.event.at for s in history) if history else timedelta(0)
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

    reacted: dict[str, int] = {}

    async def on_event(msg: Msg) -> None:
        rid = release_of(msg.subject)
        if (msg.headers or {}).get("Ferry-Type", "") in TERMINAL_TYPES:  # ferry_releases_total
            ended = await bus.histories.state(rid)
            metrics.release_ended(rid, ended.status, ended.requested_at, ended.finished_at)
        if msg.metadata.sequence.stream <= reacted.get(rid, 0):
            return  # a reaction that had already read this event has run to its end
        seq = await react(bus, rid, group_of=group_of)
        reacted[rid] = max(reacted.get(rid, 0), seq)
        if len(reacted) > 10_000:
            reacted.clear()

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
                    ack_wait=10,
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
            ack_wait=10,
        )
    finally:
        for t in (task, timer_task):
            t.cancel()
        for t in (task, timer_task):
            with contextlib.suppress(asyncio.CancelledError):
                await t
