"""Random release histories for the property tests, and fixed ones that show the known core bugs.

Random command sequences (a mix of plausible next commands and arbitrary ones, with unknown
hosts and steps) go through ``decide``; refused commands are dropped, accepted events folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import (
    HOST_STEPS,
    Event,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    Plan,
    Recipe,
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
)
from ferry.domain.rollout import Finish, ScheduleRollback, next_actions

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
