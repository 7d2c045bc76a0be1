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
warns about it once it has waited longer than ``STALE_AFTER``. Work items are the typed
models of ``ferry.domain.work``; the events the orchestrator itself decides (a release's end,
a resumed pause) go through ``ferry.infra.commands.execute`` like every other writer's.

The reconciler walks only the releases of the open-releases index (``ferry.infra.openreleases``),
which this module keeps in step with the events it follows: a pass costs what is unfinished,
never what is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import nats.js.errors
from nats.aio.msg import Msg

from ferry.domain.agentgroups import DEFAULT_GROUP
from ferry.domain.errors import InvariantViolation
from ferry.domain.events import decode, utcnow
from ferry.domain.release import TIMER, Command, ReleaseState, Resume
from ferry.domain.rollout import Finish, ResumeAt, ScheduleBuild, ScheduleHost, ScheduleRollback, next_actions
from ferry.domain.work import BuildWork, DeployWork, RollbackWork, TimerWork
from ferry.infra import metrics, subjects, tracing
from ferry.infra.bus import Bus
from ferry.infra.commands import Loaded, execute
from ferry.infra.openreleases import TERMINAL_TYPES
from ferry.infra.worker import Transient, periodic, run_consumer, supervise

log = logging.getLogger("ferry.infra.orchestrator")

MAX_TIMER_DELAY = 30.0  # re-check a long pause at least this often (cheap: one history load)
STALE_AFTER = timedelta(minutes=3)
LOCK_GRACE = timedelta(seconds=60)
RECONCILE_EVERY = 60.0

__all__ = ["TERMINAL_TYPES", "GroupOf", "ReconcilePass", "react", "reconcile", "run"]

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


async def _decide(bus: Bus, release_id: str, command: Command, what: str) -> None:
    """Append what ``command`` decides, through the one command door (retried on conflicts)."""
    try:
        state = await execute(bus.histories, release_id, command)
    except InvariantViolation as exc:  # another writer got there first: nothing left to do
        log.info("nothing to do", extra={"release_id": release_id, "why": exc.message})
        return
    log.info(what, extra={"release_id": release_id, "status": state.status})


async def react(
    bus: Bus,
    release_id: str,
    *,
    include_running: bool = False,
    group_of: GroupOf = default_group,
    loaded: Loaded | None = None,
) -> int:
    """Carry out what the rollout policy asks for now; returns the sequence the decision was made at.

    ``loaded`` is the release as just read by the caller (else it is caught up here)."""
    groups = _Groups(group_of)
    if loaded is None:
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
    for action in next_actions(state, include_running=include_running):
        match action:
            case ScheduleBuild():
                await bus.queue(subjects.BUILD_WORK, BuildWork(release_id=release_id, lock=token))
            case ScheduleHost(host=host):
                work = DeployWork(release_id=release_id, host=host, lock=token)
                await bus.queue(subjects.host_work(await groups(host), work.action), work)
            case ScheduleRollback(host=host):
                back = RollbackWork(release_id=release_id, host=host, lock=token)
                await bus.queue(subjects.host_work(await groups(host), back.action), back)
            case Finish(command=command):
                await _decide(bus, release_id, command, "release decided")
            case ResumeAt(at=at):
                if utcnow() >= at:
                    await _decide(bus, release_id, Resume(by=TIMER), "pause ran out; resumed")
                else:
                    timer = TimerWork(release_id=release_id, at=at, version=state.version)
                    await bus.queue(subjects.TIMER_WORK, timer)
    return loaded.last_seq


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
    """Timer work (``TimerWork``); a malformed item is refused (``MalformedWork``: terminated)."""
    await resume_when_due(bus, TimerWork.parse(msg.data).release_id, group_of)


async def release_stale_locks(
    bus: Bus, group_of: GroupOf = default_group, memo: Memo | None = None
) -> list[str]:
    """Hand on every environment lock (or queue place) whose release has ended or never began.

    A release joins the lock just before its first event is appended; one still without
    events after ``LOCK_GRACE`` was never created (its request failed half-way).
    """
    memo = {} if memo is None else memo
    released = []
    now = utcnow()
    for lock in await bus.locks.all():
        places = ([(lock.holder, lock.since)] if lock.holder else []) + [
            (w.release_id, w.since) for w in lock.queue
        ]
        for rid, since in places:
            loaded = (await _current(bus, rid, memo)).loaded
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


@dataclass(frozen=True)
class Seen:
    """A release as the reconciler last read it, and how many events each of its subjects held."""

    counts: dict[str, int]
    loaded: Loaded
    last_at: datetime | None


Memo = dict[str, Seen]
"""What the reconciler read, by release (kept across passes by ``run``)."""


async def _current(bus: Bus, release_id: str, memo: Memo) -> Seen:
    """The release as of now. Its subjects' message counts come from the stream's subject index
    (one request, whatever the history); when they are what they were at the last read, nothing
    was appended and that read stands. Otherwise its history is caught up (``bus.histories``)
    and its last event read by sequence (when it was recorded)."""
    info = await bus.js.stream_info(
        subjects.EVENTS_STREAM, subjects_filter=subjects.release_filter(release_id)
    )
    counts = dict(info.state.subjects or {})
    seen = memo.get(release_id)
    if seen is not None and seen.counts == counts:
        return seen
    loaded = await bus.histories.get(release_id)
    last_at = await _last_event_at(bus, loaded.last_seq) if loaded.count else None
    memo[release_id] = seen = Seen(counts, loaded, last_at)
    return seen


def _older(since: str | None, now: datetime, age: timedelta) -> bool:
    try:
        return since is None or now - datetime.fromisoformat(since) > age
    except ValueError:
        return True


@dataclass
class ReconcilePass:
    """What one reconciler pass looked at: the open releases, never the finished ones."""

    releases: list[str] = field(default_factory=list)
    """Open releases whose history was caught up and whose reaction was run again."""
    closed: list[str] = field(default_factory=list)
    """Found finished (their terminal event's reaction was lost): dropped from the index."""


async def _last_event_at(bus: Bus, seq: int) -> datetime | None:
    """When the event at ``seq`` was recorded: one direct get by sequence, whatever the history."""
    try:
        raw = await bus.js.get_msg(subjects.EVENTS_STREAM, seq=seq, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    return decode(raw.data).at if raw.data else None


async def reconcile(bus: Bus, group_of: GroupOf = default_group, memo: Memo | None = None) -> ReconcilePass:
    """Re-run reactions for every unfinished release; re-ask for hosts whose work went quiet;
    release environment locks whose holder has ended or never began.

    Only the releases of the open-releases index are looked at; one whose subjects hold what
    they held at the last pass (``memo``) is not read again.
    """
    memo = {} if memo is None else memo
    done = ReconcilePass()
    await release_stale_locks(bus, group_of, memo)
    open_ids = await bus.open_releases.ids()
    for rid in open_ids:
        seen = await _current(bus, rid, memo)
        loaded = seen.loaded
        if loaded.count == 0 or loaded.state.terminal:
            await react(bus, rid, group_of=group_of, loaded=loaded)  # hands its lock on, if held
            await bus.open_releases.remove(rid)
            done.closed.append(rid)
            continue
        quiet = utcnow() - seen.last_at if seen.last_at is not None else timedelta(0)
        stale = quiet > STALE_AFTER
        if stale:
            await _warn_waiting(loaded.state, quiet, group_of)
        await react(bus, rid, include_running=stale, group_of=group_of, loaded=loaded)
        done.releases.append(rid)
    for rid in set(memo) - set(open_ids):  # ended, or a lock place only: read again next time
        del memo[rid]
    return done


async def _warn_waiting(state: ReleaseState, quiet: timedelta, group_of: GroupOf) -> None:
    """Host work asked for in a release quiet for longer than STALE_AFTER has found no agent:
    most likely no agent of the host's group is running."""
    groups = _Groups(group_of)
    for action in next_actions(state):
        if isinstance(action, ScheduleHost | ScheduleRollback):
            log.warning(
                "host work waiting; is an agent of its group running?",
                extra={
                    "release_id": state.release_id,
                    "host": action.host,
                    "agent_group": await groups(action.host),
                    "waited": round(quiet.total_seconds()),
                },
            )


async def run(
    bus: Bus,
    stop: asyncio.Event,
    *,
    reconcile_every: float = RECONCILE_EVERY,
    group_of: GroupOf = default_group,
) -> None:
    """Follow the event stream with a durable consumer and react; reconcile periodically.

    Its three loops (events, timers, reconciler) each run under ``supervise``: one that fails
    comes back by itself while the others go on.
    """

    reacted: dict[str, int] = {}

    async def on_event(msg: Msg) -> None:
        rid = subjects.release_of(msg.subject)
        await bus.open_releases.note(rid, (msg.headers or {}).get("Ferry-Type", ""))
        if (msg.headers or {}).get("Ferry-Type", "") in TERMINAL_TYPES:  # ferry_releases_total
            ended = await bus.histories.state(rid)
            metrics.release_ended(rid, ended.status, ended.requested_at, ended.finished_at)
        if msg.metadata.sequence.stream <= reacted.get(rid, 0):
            return  # a reaction that had already read this event has run to its end
        seq = await react(bus, rid, group_of=group_of)
        reacted[rid] = max(reacted.get(rid, 0), seq)
        if len(reacted) > 10_000:
            reacted.clear()

    async def events() -> None:
        await run_consumer(
            bus.js,
            subjects.EVENTS_STREAM,
            subjects.ORCHESTRATOR,
            subjects.ALL_EVENTS,
            on_event,
            stop,
            concurrency=8,
            ack_wait=10,
        )

    async def timers() -> None:
        await run_consumer(
            bus.js,
            subjects.WORK_STREAM,
            subjects.ORCHESTRATOR_TIMER,
            subjects.TIMER_WORK,
            lambda msg: on_timer(bus, msg, group_of),
            stop,
            concurrency=8,
            ack_wait=10,
        )

    memo: Memo = {}

    async def reconciler() -> None:
        await periodic(lambda: reconcile(bus, group_of, memo), reconcile_every, stop, name="reconciler")

    await asyncio.gather(
        supervise("orchestrator events", events, stop),
        supervise("orchestrator timers", timers, stop),
        supervise("reconciler", reconciler, stop),
    )
