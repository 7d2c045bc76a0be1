"""Properties of every history the aggregate accepts, and of the rollout policy over its states.

Random command sequences (a mix of plausible next commands and arbitrary ones, with unknown
hosts and steps) go through ``decide``; refused commands are dropped, accepted events folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import (
    HOST_STEPS,
    ArtifactPackaged,
    Event,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    Plan,
    Recipe,
    ReleaseSucceeded,
    decode,
    encode,
    host_of,
)
from ferry.domain.release import (
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
    ReleaseState,
    RequestRelease,
    Resume,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
    replay,
)
from ferry.domain.rollout import Finish, ScheduleBuild, ScheduleHost, ScheduleRollback, batches, next_actions

RID = "rel-prop"
T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
POOL = ("h1", "h2", "h3")
ANY_HOST = (*POOL, "ghost")
ANY_STEP = (*HOST_STEPS, "reboot")
HOST_EVENTS = (HostStepStarted, HostStepFinished, HostFailed, HostRolledBack)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_plan(hosts: Sequence[str], **kw: object) -> Plan:
    recipe = Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app")
    return Plan(recipe=recipe, hosts=tuple(hosts), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class History:
    commands: tuple[Command, ...]
    events: tuple[Event, ...]
    states: tuple[ReleaseState, ...]  # states[i] is the state after events[:i]

    @property
    def final(self) -> ReleaseState:
        return self.states[-1]


class Runner:
    def __init__(self) -> None:
        self.state = ReleaseState(RID)
        self.commands: list[Command] = []
        self.events: list[Event] = []
        self.states: list[ReleaseState] = [self.state]

    def apply(self, command: Command) -> None:
        self.commands.append(command)
        now = T0 + timedelta(seconds=len(self.commands))
        try:
            events = decide(self.state, command, now)
        except InvariantViolation:
            return
        assert len(events) == 1, "every accepted command yields exactly one event"
        for event in events:
            host = host_of(event)
            mine = self.state.version if host is None else self.state.hosts[host].version
            assert event.version == mine + 1, "each subject numbers its events 1, 2, 3, ..."
            self.state = evolve(self.state, event)
            self.events.append(event)
            self.states.append(self.state)

    def history(self) -> History:
        return History(tuple(self.commands), tuple(self.events), tuple(self.states))


def run(commands: Sequence[Command]) -> History:
    runner = Runner()
    for command in commands:
        runner.apply(command)
    return runner.history()


# --- strategies -------------------------------------------------------------------------

plans = st.builds(
    make_plan,
    hosts=st.lists(st.sampled_from(POOL), max_size=3, unique=True),
    concurrency=st.integers(0, 3),
    max_failures=st.integers(0, 2),
    require_approval=st.booleans(),
    rollback_on_failure=st.booleans(),
    strategy=st.sampled_from(["all", "rolling", "canary"]),
    batch_size=st.one_of(st.none(), st.integers(1, 3)),
    canary_size=st.integers(1, 3),
    canary_pause=st.sampled_from([None, 0.0, 2.0]),
)
hosts_any = st.sampled_from(ANY_HOST)
steps_any = st.sampled_from(ANY_STEP)
exit_codes = st.sampled_from([0, 0, 0, 1])
who = st.sampled_from(["alice", "bob"])

request = st.builds(RequestRelease, st.just("app"), st.just("prod"), st.just("main"), who, plans)

random_command: st.SearchStrategy[Command] = st.one_of(
    request,
    st.builds(Approve, who),
    st.builds(Reject, who, st.just("no")),
    st.builds(Cancel, who),
    st.builds(StartBuild),
    st.builds(RecordSource, st.sampled_from(["c0ffee", "deadbeef"])),
    st.builds(RecordHook, st.integers(0, 2), st.just("make"), exit_codes, st.just(1.0)),
    st.builds(RecordArtifact, st.just("sha256:00"), st.just(10), st.sampled_from(["zst", "gz", "none"])),
    st.builds(FailBuild, st.sampled_from(["fetch", "hooks", "package"]), st.just("boom")),
    st.builds(StartHostStep, hosts_any, steps_any),
    st.builds(
        FinishHostStep,
        hosts_any,
        steps_any,
        exit_codes,
        st.just(0.5),
        st.just(""),
        st.sampled_from([{}, {"previous": "rel-0"}]),
    ),
    st.builds(FailHost, hosts_any, steps_any, st.just("failed")),
    st.builds(RollBackHost, hosts_any, st.sampled_from([None, "rel-0"])),
    st.builds(Succeed),
    st.builds(Fail, st.just("given up")),
    st.builds(Pause),
    st.builds(Resume, st.sampled_from(["bob", "timer"])),
)


def plausible(state: ReleaseState) -> list[Command]:
    """Commands that would move ``state`` forward, so random runs reach deep states."""
    match state.status:
        case "new":
            return []
        case "awaiting_approval":
            return [Approve("bob")]
        case "queued":
            return [StartBuild()]
        case "building":
            if state.commit is None:
                return [RecordSource("c0ffee")]
            return [RecordArtifact("sha256:00", 10, "zst"), RecordHook(0, "make", 0, 1.0)]
    if state.terminal:
        return []
    if state.status == "paused":
        return [Resume("bob"), Resume("timer"), Cancel("bob")]
    out: list[Command] = []
    for name, h in state.hosts.items():
        if h.status not in ("waiting", "running"):
            continue
        step = h.next_step()
        if step is None:
            continue
        current = h.steps.get(step)
        if current is not None and current.status == "running":
            out.append(FinishHostStep(name, step, 0, 0.1, "", {"previous": "rel-0"}))
        else:
            out.append(StartHostStep(name, step))
    for action in next_actions(state):
        if isinstance(action, ScheduleRollback):
            out.append(RollBackHost(action.host, "rel-0"))
        elif isinstance(action, Finish):
            out.append(action.command)
    return out or [Succeed()]


request_plausible = st.builds(
    RequestRelease,
    st.just("app"),
    st.just("prod"),
    st.just("main"),
    who,
    st.builds(
        make_plan,
        hosts=st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True),
        concurrency=st.integers(1, 3),
        max_failures=st.integers(0, 1),
        require_approval=st.booleans(),
        rollback_on_failure=st.booleans(),
        strategy=st.sampled_from(["all", "rolling", "canary"]),
        batch_size=st.one_of(st.none(), st.integers(1, 2)),
        canary_size=st.integers(1, 2),
        canary_pause=st.sampled_from([None, 0.0, 2.0]),
    ),
)
MODES = ("plausible",) * 20 + ("fail", "rollback") + ("random",) * 3


def _failable(state: ReleaseState) -> list[str]:
    if state.artifact is None or state.terminal:
        return []
    return [n for n, h in state.hosts.items() if h.status in ("waiting", "running")]


def _activated(state: ReleaseState) -> list[str]:
    return [n for n, h in state.hosts.items() if h.activated and h.status != "rolled_back"]


@st.composite
def histories(draw: st.DrawFn, max_commands: int = 70) -> History:
    runner = Runner()
    for _ in range(draw(st.integers(1, max_commands))):
        state = runner.state
        mode = draw(st.sampled_from(MODES))
        if mode == "plausible" and state.status == "new":
            runner.apply(draw(request_plausible))
        elif mode == "plausible" and (options := plausible(state)):
            runner.apply(draw(st.sampled_from(options)))
        elif mode == "fail" and (hosts := _failable(state)):
            host = draw(st.sampled_from(hosts))
            runner.apply(FailHost(host, state.hosts[host].next_step() or "post_release", "failed"))
        elif mode == "rollback" and (hosts := _activated(state)):
            runner.apply(RollBackHost(draw(st.sampled_from(hosts)), "rel-0"))
        else:
            runner.apply(draw(random_command))
    return runner.history()


# --- fixed histories that show the known core bugs --------------------------------------

BUILT: list[Command] = [StartBuild(), RecordSource("c0ffee"), RecordArtifact("sha256:00", 10, "zst")]


def _steps(host: str, steps: Sequence[str]) -> list[Command]:
    out: list[Command] = []
    for step in steps:
        out += [StartHostStep(host, step), FinishHostStep(host, step, 0, 0.1, "", {"previous": "rel-0"})]
    return out


BUILD_FAILED = run(
    [RequestRelease("app", "prod", "main", "alice", make_plan(["h1"])), StartBuild(), FailBuild("fetch", "x")]
)
HOST_FAILED_BEFORE_ARTIFACT = run(
    [
        RequestRelease("app", "prod", "main", "alice", make_plan(["h1"])),
        FailHost("h1", "upload", "unreachable"),
    ]
)
FAILED_HOST_SUCCEEDS = run(
    [
        RequestRelease("app", "prod", "main", "alice", make_plan(["h1"])),
        *BUILT,
        *_steps("h1", HOST_STEPS[:-1]),
        StartHostStep("h1", "post_release"),
        FailHost("h1", "post_release", "timeout"),
        RollBackHost("h1", "rel-0"),
        FinishHostStep("h1", "post_release", 0, 0.1),
        Succeed(),
    ]
)
ROLLED_BACK_WITHOUT_FAILURE = run(
    [
        RequestRelease("app", "prod", "main", "alice", make_plan(["h1"])),
        *BUILT,
        *_steps("h1", HOST_STEPS),
        RollBackHost("h1", "rel-0"),
    ]
)


def test_fixed_histories_are_what_they_claim():
    # (the other two fixed histories describe the bugs themselves, so they change once fixed)
    assert BUILD_FAILED.final.status == "failed"
    assert ROLLED_BACK_WITHOUT_FAILURE.final.hosts["h1"].status == "rolled_back"
    assert not ROLLED_BACK_WITHOUT_FAILURE.final.terminal


# --- history properties --------------------------------------------------------------------


def _check_versions(h: History) -> None:
    by_subject: dict[str | None, list[int]] = {}
    for e in h.events:
        by_subject.setdefault(host_of(e), []).append(e.version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_subject.values())
    assert all(e.release_id == RID for e in h.events)


def _check_nothing_after_terminal(h: History) -> None:
    for i, state in enumerate(h.states[:-1]):
        assert not state.terminal, f"event {h.events[i].type} (v{i + 1}) follows a terminal state"
    for e in h.events[:-1]:
        assert not e.TERMINAL, f"{e.type} is terminal but is not the last event"


def _check_step_order(h: History) -> None:
    last: dict[str, int] = {}
    succeeded: dict[str, set[str]] = {}
    for e in h.events:
        if isinstance(e, HostStepFinished) and e.exit_code == 0:
            succeeded.setdefault(e.host, set()).add(e.step)
        if not isinstance(e, HostStepStarted):
            continue
        assert e.step in HOST_STEPS
        idx = HOST_STEPS.index(e.step)
        prev = last.get(e.host, -1)
        done = succeeded.get(e.host, set())
        assert all(s in done for s in HOST_STEPS[:idx]), f"{e.host}: {e.step} started before earlier steps"
        if idx == prev:
            assert e.step not in done, f"{e.host}: {e.step} re-started after it succeeded"
        else:
            assert idx == prev + 1, f"{e.host}: {e.step} started out of order (after {HOST_STEPS[prev]})"
        last[e.host] = idx


def _check_single_activation(h: History) -> None:
    activations = [
        e.host
        for e in h.events
        if isinstance(e, HostStepFinished) and e.step == "activate" and e.exit_code == 0
    ]
    assert len(activations) == len(set(activations)), f"activated twice: {activations}"


def _check_no_host_step_before_artifact(h: History, kinds: tuple[type[Event], ...]) -> None:
    seen_artifact = False
    for e in h.events:
        if isinstance(e, ArtifactPackaged):
            seen_artifact = True
        if isinstance(e, kinds):
            assert seen_artifact, f"{e.type} before any artifact"


def _check_hosts_belong_to_plan(h: History) -> None:
    plan = h.final.plan
    for e in h.events:
        if isinstance(e, HOST_EVENTS):
            assert plan is not None and e.host in plan.hosts


def _check_replay(h: History, split: int) -> None:
    state = ReleaseState(RID)
    for i, event in enumerate(h.events):
        state = evolve(state, event)
        assert state == h.states[i + 1]
    assert replay(RID, h.events) == state == h.final
    # replaying a prefix, then the rest, equals replaying all
    resumed = replay(RID, h.events[:split])
    assert resumed == h.states[split]
    for event in h.events[split:]:
        resumed = evolve(resumed, event)
    assert resumed == replay(RID, h.events)


def _check_wire(h: History) -> None:
    decoded = [decode(encode(e)) for e in h.events]
    assert decoded == list(h.events)
    assert replay(RID, decoded) == h.final


def _check_decide_is_pure(h: History) -> None:
    for command in h.commands[-3:]:
        try:
            first = decide(h.final, command, T0)
        except InvariantViolation:
            with pytest.raises(InvariantViolation):
                decide(h.final, command, T0)
        else:
            assert decide(h.final, command, T0) == first


# One test draws each history once and checks every property on it: generating is the cost.
@SETTINGS
@given(histories(), st.data())
def test_accepted_histories_keep_the_invariants(h: History, data: st.DataObject):
    _check_versions(h)
    _check_nothing_after_terminal(h)
    _check_step_order(h)
    _check_single_activation(h)
    _check_no_host_step_before_artifact(h, (HostStepStarted, HostStepFinished, HostRolledBack))
    _check_hosts_belong_to_plan(h)
    _check_replay(h, data.draw(st.integers(0, len(h.events)), label="split"))
    _check_wire(h)
    _check_decide_is_pure(h)


# --- properties the core breaks today (each pinned by an explicit failing history) -----------


@SETTINGS
@given(histories())
@example(BUILD_FAILED)
def test_terminal_flag_marks_exactly_the_events_that_end_a_release(h: History):
    for i, e in enumerate(h.events):
        assert e.TERMINAL == h.states[i + 1].terminal, e.type


@SETTINGS
@given(histories())
@example(HOST_FAILED_BEFORE_ARTIFACT)
def test_no_host_event_at_all_before_an_artifact(h: History):
    _check_no_host_step_before_artifact(h, HOST_EVENTS)


@SETTINGS
@given(histories())
@example(FAILED_HOST_SUCCEEDS)
def test_a_failed_host_never_succeeds(h: History):
    failed: set[str] = set()
    for i, e in enumerate(h.events):
        if isinstance(e, HostFailed):
            failed.add(e.host)
        state = h.states[i + 1]
        for host in failed:
            assert state.hosts[host].status in ("failed", "rolled_back")
        if isinstance(e, ReleaseSucceeded):
            assert not failed, f"release succeeded although {sorted(failed)} failed"


# --- rollout policy properties ----------------------------------------------------------------


def _running(state: ReleaseState) -> set[str]:
    return {n for n, h in state.hosts.items() if h.status == "running"}


def _waiting(state: ReleaseState) -> set[str]:
    return {n for n, h in state.hosts.items() if h.status == "waiting"}


def _check_policy_shape(state: ReleaseState, include_running: bool) -> None:
    actions = next_actions(state, include_running=include_running)
    if state.terminal or state.plan is None:
        assert actions == [], "nothing is scheduled for a terminal release"
        return
    if state.status == "awaiting_approval":
        assert actions == []
    if state.status in ("queued", "building"):
        assert actions == [ScheduleBuild()]
    hosts = [a.host for a in actions if isinstance(a, ScheduleHost)]
    assert len(hosts) == len(set(hosts))
    running, waiting = _running(state), _waiting(state)
    new = [n for n in hosts if n not in running]
    assert set(new) <= waiting, "only waiting hosts are started"
    if new:
        assert len(running) + len(new) <= max(state.plan.concurrency, 1), "concurrency cap exceeded"
    if include_running and state.status == "deploying":
        assert set(hosts) & running == running, "every host in flight is asked for again"
    if not include_running:
        assert not set(hosts) & running
    finishes = [a for a in actions if isinstance(a, Finish)]
    if finishes:
        assert actions == finishes and len(finishes) == 1
        assert not running, "a release finishes only when no host is in flight"
        if isinstance(finishes[0].command, Succeed):
            assert not waiting
            assert all(x.failure is None for x in state.hosts.values())


def _check_policy_work_is_accepted(state: ReleaseState) -> None:
    for action in next_actions(state):
        if isinstance(action, ScheduleHost):
            decide(state, StartHostStep(action.host, "upload"), T0)
        elif isinstance(action, ScheduleRollback):
            decide(state, RollBackHost(action.host, None), T0)
        elif isinstance(action, Finish) and not isinstance(action.command, Succeed):
            # Finish(Succeed) is checked by test_rollout_succeeds_only_when_every_host_succeeded
            decide(state, action.command, T0)


@SETTINGS
@given(histories())
def test_rollout_policy_over_every_state(h: History):
    for state in h.states:
        _check_policy_shape(state, include_running=False)
        _check_policy_shape(state, include_running=True)
        _check_policy_work_is_accepted(state)


@SETTINGS
@given(histories())
@example(ROLLED_BACK_WITHOUT_FAILURE)
def test_rollout_succeeds_only_when_every_host_succeeded(h: History):
    for state in h.states:
        for action in next_actions(state, include_running=True):
            if isinstance(action, Finish) and isinstance(action.command, Succeed):
                assert all(x.status == "succeeded" for x in state.hosts.values())
                decide(state, action.command, T0)


# --- rollout strategies ---------------------------------------------------------------------


def _first_open_batch(state: ReleaseState) -> tuple[str, ...]:
    for batch in batches(state):
        if any(state.hosts[n].status in ("waiting", "running") for n in batch):
            return batch
    return ()


@SETTINGS
@given(histories())
def test_policy_starts_hosts_only_from_the_first_unfinished_batch(h: History):
    for state in h.states:
        plan = state.plan
        new = [
            a.host
            for a in next_actions(state)
            if isinstance(a, ScheduleHost) and state.hosts[a.host].status == "waiting"
        ]
        if plan is None or not new:
            continue
        assert state.status not in ("paused", "cancelling"), "nothing starts while paused"
        if plan.strategy == "all" or (
            plan.strategy == "canary" and plan.batch_size is None and state.was_paused
        ):
            continue
        batch = _first_open_batch(state)
        assert set(new) <= set(batch), f"{new} scheduled outside the current batch {batch}"


@SETTINGS
@given(histories())
def test_a_canary_starts_nothing_beyond_its_batch_before_the_pause(h: History):
    plan = h.final.plan
    if plan is None or plan.strategy != "canary":
        return
    canary = set(plan.hosts[: plan.canary_size])
    for i, e in enumerate(h.events):
        if isinstance(e, HostStepStarted) and not h.states[i].was_paused:
            assert e.host in canary, f"{e.host} started before the canary pause"
        if isinstance(e, HostStepStarted) and h.states[i].status in ("paused", "cancelling"):
            assert h.states[i].hosts[e.host].status == "running", "a host started while paused"
