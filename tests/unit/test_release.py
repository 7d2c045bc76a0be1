"""The release aggregate: decide() guards every invariant, evolve() folds the history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ferry.domain.errors import Conflict, InvariantViolation
from ferry.domain.events import (
    HOST_STEPS,
    ArtifactPackaged,
    BuildStarted,
    Event,
    HostStepFinished,
    HostStepStarted,
    Plan,
    Recipe,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseCancelRequested,
    ReleaseFailed,
    ReleasePaused,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseResumed,
    ReleaseSucceeded,
    decode,
    encode,
    host_of,
)
from ferry.domain.release import (
    TERMINAL,
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
    ReleaseState,
    RequestRelease,
    Resume,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
    guards_whole_release,
    replay,
)

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
RID = "rel-1"
HOSTS = ("web-1", "web-2")
COMMIT = "9f2c1e07b4a3d85c6e1f0a9b2c3d4e5f60718293"


def make_plan(hosts: Sequence[str] = HOSTS, **kw: object) -> Plan:
    recipe = Recipe(repo_url="file:///srv/git/shop.git", deploy_path="/srv/shop")
    return Plan(recipe=recipe, hosts=tuple(hosts), **kw)  # type: ignore[arg-type]


class Release:
    """A release under test: applies commands through decide/evolve and keeps the history."""

    def __init__(self) -> None:
        self.state = ReleaseState(RID)
        self.history: list[Event] = []

    def __call__(self, *commands: Command) -> Release:
        for command in commands:
            now = T0 + timedelta(seconds=len(self.history))
            events = decide(self.state, command, now)
            for event in events:
                self.state = evolve(self.state, event)
            self.history.extend(events)
        return self

    def refuses(self, command: Command, match: str | None = None) -> InvariantViolation:
        before = self.state
        with pytest.raises(InvariantViolation, match=match) as info:
            decide(self.state, command, T0)
        assert self.state == before
        return info.value

    # --- scripted stretches ---------------------------------------------------
    def requested(self, hosts: Sequence[str] = HOSTS, **kw: object) -> Release:
        return self(RequestRelease("shop", "prod", "v1.4.2", "alice", make_plan(hosts, **kw)))

    def built(self) -> Release:
        return self(
            StartBuild("builder-1"),
            RecordSource(COMMIT, 1.5),
            RecordHook(0, "npm ci", 0, 30.0, "ok"),
            RecordArtifact("sha256:" + "ab" * 32, 1024, "zst"),
        )

    def ready(self, hosts: Sequence[str] = HOSTS, **kw: object) -> Release:
        return self.requested(hosts, **kw).built()

    def steps(self, host: str, steps: Sequence[str], previous: str | None = "rel-0") -> Release:
        for step in steps:
            detail = {"previous": previous} if step == "activate" and previous else {}
            self(StartHostStep(host, step, "agent-1"), FinishHostStep(host, step, 0, 0.1, "", detail))
        return self

    def host_done(self, host: str) -> Release:
        return self.steps(host, HOST_STEPS)

    def up_to(self, host: str, step: str) -> Release:
        """Run every step of ``host`` before ``step``."""
        return self.steps(host, HOST_STEPS[: HOST_STEPS.index(step)])


def release() -> Release:
    return Release()


# --- the happy path ---------------------------------------------------------------


def test_happy_path():
    r = release().ready()
    for host in HOSTS:
        r.host_done(host)
    r(Succeed())

    s = r.state
    assert s.status == "succeeded" and s.terminal
    assert len(r.history) == 5 + 2 * 2 * len(HOST_STEPS) + 1
    # release-level events and each host's events are numbered on their own subjects
    assert (
        [e.version for e in r.history if host_of(e) is None]
        == list(range(1, s.version + 1))
        == [1, 2, 3, 4, 5, 6]
    )
    for host in HOSTS:
        mine = [e.version for e in r.history if host_of(e) == host]
        assert mine == list(range(1, 2 * len(HOST_STEPS) + 1)) and s.hosts[host].version == len(mine)
    assert all(e.release_id == RID for e in r.history)
    assert (s.project, s.environment, s.ref, s.requested_by) == ("shop", "prod", "v1.4.2", "alice")
    assert s.commit == COMMIT
    assert s.artifact is not None and s.artifact.digest == "sha256:" + "ab" * 32
    assert s.requested_at == T0
    assert s.finished_at == r.history[-1].at
    for host in HOSTS:
        h = s.hosts[host]
        assert h.status == "succeeded" and h.activated and h.previous_release == "rel-0"
        assert h.next_step() is None
        assert [h.steps[step].status for step in HOST_STEPS] == ["succeeded"] * len(HOST_STEPS)
    host_steps = [(e.host, e.step) for e in r.history if isinstance(e, HostStepStarted)]
    assert host_steps == [(h, step) for h in HOSTS for step in HOST_STEPS]
    assert isinstance(r.history[0], ReleaseRequested)
    assert isinstance(r.history[-1], ReleaseSucceeded)


def test_status_through_the_build():
    r = release().requested()
    assert r.state.status == "queued"
    assert set(r.state.hosts) == set(HOSTS)
    assert all(h.status == "waiting" for h in r.state.hosts.values())
    r(StartBuild())
    assert r.state.status == "building" and r.state.build_started
    r(RecordSource(COMMIT))
    assert r.state.status == "building" and r.state.commit == COMMIT
    r(RecordHook(0, "make", 0, 1.0))
    r(RecordArtifact("sha256:00", 10, "gz", reused=True))
    assert r.state.status == "deploying"
    assert r.state.artifact is not None and r.state.artifact.reused


def test_hosts_interleave_freely():
    r = release().ready()
    r(StartHostStep("web-1", "upload"), StartHostStep("web-2", "upload"))
    r(FinishHostStep("web-2", "upload", 0, 1.0), FinishHostStep("web-1", "upload", 0, 1.0))
    assert r.state.hosts["web-1"].next_step() == "link"
    assert r.state.hosts["web-2"].next_step() == "link"


def test_replay_equals_the_state_built_step_by_step():
    r = release().ready()
    r.host_done("web-1").up_to("web-2", "health")
    assert replay(RID, r.history) == r.state


def test_commands_produce_one_event_with_the_next_version():
    r = release().ready()
    events = decide(r.state, StartHostStep("web-1", "upload"), T0)
    assert len(events) == 1
    assert events[0].version == r.state.hosts["web-1"].version + 1 == 1
    assert decide(r.state, Cancel("bob"), T0)[0].version == r.state.version + 1
    assert events[0].at == T0 and events[0].release_id == RID


# --- before the release exists ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [Approve("bob"), StartBuild(), RecordSource(COMMIT), Cancel("bob"), Succeed(), Fail("x")],
    ids=lambda c: type(c).__name__,
)
def test_nothing_before_the_request(command: Command):
    release().refuses(command, "does not exist")


def test_request_twice_refused():
    release().requested().refuses(RequestRelease("shop", "prod", "main", "bob", make_plan()), "already")


def test_request_without_hosts_refused():
    err = release().refuses(RequestRelease("shop", "prod", "main", "bob", make_plan(hosts=())))
    assert err.field == "hosts"


def test_invariant_violation_is_a_conflict():
    assert issubclass(InvariantViolation, Conflict)
    assert InvariantViolation.code == "INVARIANT"


# --- terminal states ----------------------------------------------------------------


def _succeeded() -> Release:
    r = release().ready(hosts=("web-1",))
    return r.host_done("web-1")(Succeed())


def _failed() -> Release:
    return release().requested()(StartBuild(), FailBuild("fetch", "ref not found"))


def _failed_after_hosts() -> Release:
    r = release().ready().up_to("web-1", "health")
    return r(FailHost("web-1", "health", "503"), RollBackHost("web-1", "rel-0"), Fail("web-1 failed"))


def _cancelled() -> Release:
    """A cancel while a host uploads: the host stops (CANCELLED), then the release ends cancelled."""
    return release().ready()(
        StartHostStep("web-1", "upload"),
        Cancel("alice", "wrong ref"),
        FinishHostStep("web-1", "upload", 0, 1.0),
        FailHost("web-1", "link", "cancelled by alice", "CANCELLED"),
        Cancel("alice"),
    )


def _rejected() -> Release:
    return release().requested(require_approval=True)(Reject("bob", "freeze"))


TERMINAL_ROUTES = {
    "succeeded": _succeeded,
    "failed": _failed,
    "failed-after-hosts": _failed_after_hosts,
    "cancelled": _cancelled,
    "rejected": _rejected,
}

AFTER_TERMINAL: list[Command] = [
    RequestRelease("shop", "prod", "main", "bob", make_plan()),
    Approve("bob"),
    Reject("bob"),
    Cancel("bob"),
    StartBuild(),
    RecordSource(COMMIT),
    RecordHook(1, "make", 0, 1.0),
    RecordArtifact("sha256:01", 1, "zst"),
    FailBuild("package", "disk full"),
    StartHostStep("web-1", "upload"),
    StartHostStep("web-2", "upload"),
    FinishHostStep("web-1", "upload", 0, 1.0),
    FinishHostStep("web-2", "upload", 0, 1.0),
    FailHost("web-2", "upload", "boom"),
    RollBackHost("web-1", None),
    Succeed(),
    Fail("again"),
]


@pytest.mark.parametrize("route", TERMINAL_ROUTES)
@pytest.mark.parametrize("command", AFTER_TERMINAL, ids=lambda c: type(c).__name__)
def test_nothing_after_a_terminal_state(route: str, command: Command):
    r = TERMINAL_ROUTES[route]()
    assert r.state.terminal and r.state.status in TERMINAL
    r.refuses(command)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(
            name,
        )
        if name == "failed"
        else name
        for name in TERMINAL_ROUTES
    ],
)
def test_terminal_event_flag_matches_the_state(route: str):
    r = TERMINAL_ROUTES[route]()
    assert r.history[-1].TERMINAL
    assert not any(e.TERMINAL for e in r.history[:-1])


def test_terminal_states_record_reason_and_time():
    assert _failed().state.reason == "build fetch failed: ref not found"
    assert _failed_after_hosts().state.reason == "web-1 failed"
    assert _cancelled().state.reason == "wrong ref"
    assert _rejected().state.reason == "freeze"
    for route in TERMINAL_ROUTES.values():
        r = route()
        assert r.state.finished_at == r.history[-1].at


# --- host steps ---------------------------------------------------------------------


@pytest.mark.parametrize("step", HOST_STEPS[1:])
def test_first_host_step_must_be_upload(step: str):
    err = release().ready().refuses(StartHostStep("web-1", step), "out of order")
    assert err.field == "step"


def test_cannot_skip_a_step():
    r = release().ready().up_to("web-1", "activate")
    r.refuses(StartHostStep("web-1", "restart"), "out of order")
    r.refuses(StartHostStep("web-1", "post_release"), "out of order")


@pytest.mark.parametrize("done", range(1, len(HOST_STEPS)))
def test_cannot_go_back_to_a_finished_step(done: int):
    r = release().ready().steps("web-1", HOST_STEPS[:done], previous=None)
    for step in HOST_STEPS[:done]:
        r.refuses(StartHostStep("web-1", step))


def test_cannot_start_next_step_while_one_is_running():
    r = release().ready()(StartHostStep("web-1", "upload"))
    r.refuses(StartHostStep("web-1", "link"), "out of order")


def test_unknown_step_refused():
    err = release().ready().refuses(StartHostStep("web-1", "reboot"), "unknown step")
    assert err.field == "step"


@pytest.mark.parametrize(
    "command",
    [
        StartHostStep("db-1", "upload"),
        FinishHostStep("db-1", "upload", 0, 1.0),
        FailHost("db-1", "upload", "x"),
        RollBackHost("db-1", None),
    ],
    ids=lambda c: type(c).__name__,
)
def test_unknown_host_refused(command: Command):
    err = release().ready().refuses(command, "not part of this release")
    assert err.field == "host"


@pytest.mark.parametrize("stage", ["queued", "awaiting_approval", "building", "fetched"])
def test_no_host_step_before_an_artifact(stage: str):
    r = release().requested(require_approval=stage == "awaiting_approval")
    if stage in ("building", "fetched"):
        r(StartBuild())
    if stage == "fetched":
        r(RecordSource(COMMIT), RecordHook(0, "make", 0, 1.0))
    r.refuses(StartHostStep("web-1", "upload"), "no artifact")


@pytest.mark.parametrize("stage", ["queued", "building"])
def test_no_host_failure_before_an_artifact(stage: str):
    r = release().requested()
    if stage == "building":
        r(StartBuild())
    r.refuses(FailHost("web-1", "upload", "unreachable"), "no artifact")


def test_finish_a_step_never_started_refused():
    r = release().ready()
    err = r.refuses(FinishHostStep("web-1", "upload", 0, 1.0), "not running")
    assert err.field == "step"
    r.refuses(FinishHostStep("web-1", "activate", 0, 1.0), "not running")


def test_finish_a_step_twice_refused():
    r = release().ready().steps("web-1", ["upload"])
    r.refuses(FinishHostStep("web-1", "upload", 0, 1.0), "not running")


def test_finish_a_failed_step_again_refused():
    r = release().ready()(StartHostStep("web-1", "upload"), FinishHostStep("web-1", "upload", 1, 1.0))
    assert r.state.hosts["web-1"].steps["upload"].status == "failed"
    r.refuses(FinishHostStep("web-1", "upload", 0, 1.0), "not running")


def test_failed_step_keeps_the_host_on_that_step():
    r = release().ready()(StartHostStep("web-1", "upload"), FinishHostStep("web-1", "upload", 255, 2.0))
    h = r.state.hosts["web-1"]
    assert h.status == "running" and h.next_step() == "upload"
    s = h.steps["upload"]
    assert (s.exit_code, s.duration, s.started_at) == (255, 2.0, r.history[-2].at)
    r.refuses(StartHostStep("web-1", "link"), "out of order")


# --- activation -----------------------------------------------------------------------


def test_activate_succeeded_cannot_start_again():
    r = release().ready().up_to("web-1", "restart")
    assert r.state.hosts["web-1"].activated
    r.refuses(StartHostStep("web-1", "activate"))


def test_activate_twice_refused_even_if_history_reopened_the_step():
    """A history in which activate ran again (an older writer appended it) must not allow a third."""
    r = release().ready().up_to("web-1", "restart")
    reopened = HostStepStarted(
        release_id=RID, version=r.state.hosts["web-1"].version + 1, at=T0, host="web-1", step="activate"
    )
    state = evolve(r.state, reopened)
    assert state.hosts["web-1"].activated
    assert state.hosts["web-1"].next_step() == "activate"
    with pytest.raises(InvariantViolation, match="already activated"):
        decide(state, StartHostStep("web-1", "activate"), T0)


def test_failed_activate_does_not_count_as_activated():
    r = release().ready().up_to("web-1", "activate")
    r(StartHostStep("web-1", "activate"), FinishHostStep("web-1", "activate", 1, 0.1, "", {"previous": "p"}))
    h = r.state.hosts["web-1"]
    assert not h.activated and h.previous_release is None
    r(StartHostStep("web-1", "activate"))  # retrying a failed activate is allowed
    r.refuses(RollBackHost("web-1", None), "never activated")


def test_activate_in_one_release_does_not_affect_other_hosts():
    r = release().ready().up_to("web-1", "restart")
    assert not r.state.hosts["web-2"].activated


# --- resuming after a crash -------------------------------------------------------------


@pytest.mark.parametrize("step", HOST_STEPS)
def test_resume_a_step_started_but_never_finished(step: str):
    r = release().ready().up_to("web-1", step)
    r(StartHostStep("web-1", step, "agent-1"))
    r(StartHostStep("web-1", step, "agent-2"))  # redelivered to another agent after a crash
    r(FinishHostStep("web-1", step, 0, 1.0))
    assert r.state.hosts["web-1"].steps[step].status == "succeeded"
    assert r.state.hosts["web-1"].next_step() == (
        None if step == HOST_STEPS[-1] else HOST_STEPS[HOST_STEPS.index(step) + 1]
    )


def test_resumed_step_started_at_is_the_latest_start():
    r = release().ready()
    r(StartHostStep("web-1", "upload"), StartHostStep("web-1", "upload"))
    assert r.state.hosts["web-1"].steps["upload"].started_at == r.history[-1].at


# --- Succeed / Fail ------------------------------------------------------------------------


def test_succeed_refused_while_a_host_is_not_done():
    r = release().ready()
    r.refuses(Succeed(), "not every host")
    r.host_done("web-1")
    r.refuses(Succeed(), "not every host")
    r.up_to("web-2", "post_release")
    r.refuses(Succeed(), "not every host")
    r(StartHostStep("web-2", "post_release"))
    r.refuses(Succeed(), "not every host")
    r(FinishHostStep("web-2", "post_release", 0, 1.0))
    r(Succeed())


@pytest.mark.parametrize("stage", ["queued", "building"])
def test_succeed_refused_before_deploying(stage: str):
    r = release().requested()
    if stage == "building":
        r(StartBuild(), RecordSource(COMMIT))
    r.refuses(Succeed())


def test_succeed_refused_when_a_host_failed():
    r = release().ready().host_done("web-1")(FailHost("web-2", "upload", "unreachable"))
    r.refuses(Succeed(), "not every host")


def test_fail_refused_while_a_host_is_running():
    r = release().ready()(StartHostStep("web-1", "upload"))
    r.refuses(Fail("stop"), "still running: web-1")
    r(FinishHostStep("web-1", "upload", 0, 1.0))
    # between two steps the host is still in flight
    r.refuses(Fail("stop"), "still running")
    r(FailHost("web-1", "link", "ssh dropped"))
    r(Fail("stop"))
    assert r.state.status == "failed"


def test_fail_names_every_running_host():
    r = release().ready(hosts=("b", "a", "c"))(StartHostStep("b", "upload"), StartHostStep("a", "upload"))
    r.refuses(Fail("x"), "hosts still running: a, b")


@pytest.mark.parametrize("stage", ["queued", "building", "deploying"])
def test_fail_allowed_while_no_host_runs(stage: str):
    r = release().requested()
    if stage == "building":
        r(StartBuild())
    if stage == "deploying":
        r.built()
    r(Fail("orchestrator gave up"))
    assert r.state.status == "failed" and r.state.reason == "orchestrator gave up"


# --- failing hosts and rollback --------------------------------------------------------------


def test_fail_host_records_the_reason():
    r = release().ready().up_to("web-1", "health")(StartHostStep("web-1", "health"))
    r(FailHost("web-1", "health", "503 after 5 tries", "HEALTH"))
    h = r.state.hosts["web-1"]
    assert h.status == "failed" and h.failure == "503 after 5 tries" and h.activated


def test_fail_host_twice_refused():
    r = release().ready()(FailHost("web-1", "upload", "unreachable"))
    r.refuses(FailHost("web-1", "upload", "unreachable"), "already failed")


def test_failed_host_cannot_start_steps():
    r = release().ready()(StartHostStep("web-1", "upload"), FailHost("web-1", "upload", "x"))
    r.refuses(StartHostStep("web-1", "upload"), "already failed")


def test_succeeded_host_cannot_fail_or_start():
    r = release().ready().host_done("web-1")
    r.refuses(FailHost("web-1", "health", "x"), "already succeeded")
    r.refuses(StartHostStep("web-1", "upload"), "already succeeded")


def test_failed_host_accepts_no_step_finish():
    r = release().ready().up_to("web-1", "post_release")
    r(StartHostStep("web-1", "post_release"), FailHost("web-1", "post_release", "timeout"))
    r.refuses(FinishHostStep("web-1", "post_release", 0, 1.0))


def test_rolled_back_host_never_lets_the_release_succeed():
    r = release().ready(hosts=("web-1",)).up_to("web-1", "post_release")
    r(StartHostStep("web-1", "post_release"), FailHost("web-1", "post_release", "timeout"))
    r(RollBackHost("web-1", "rel-0"))
    try:
        r(FinishHostStep("web-1", "post_release", 0, 1.0))
    except InvariantViolation:
        pass
    assert r.state.hosts["web-1"].status == "rolled_back"
    r.refuses(Succeed())


def test_roll_back_an_activated_host():
    r = release().ready().up_to("web-1", "health")(FailHost("web-1", "health", "503"))
    r(RollBackHost("web-1", "rel-0", "switched back"))
    h = r.state.hosts["web-1"]
    assert h.status == "rolled_back" and h.failure == "503"


def test_roll_back_a_host_never_activated_refused():
    r = release().ready().up_to("web-1", "activate")(FailHost("web-1", "activate", "x"))
    r.refuses(RollBackHost("web-1", None), "never activated")


def test_roll_back_twice_refused():
    r = (
        release()
        .ready()
        .up_to("web-1", "health")(FailHost("web-1", "health", "x"), RollBackHost("web-1", None))
    )
    r.refuses(RollBackHost("web-1", None), "already rolled back")


# --- approval -------------------------------------------------------------------------------


def test_approval_flow():
    r = release().requested(require_approval=True)
    assert r.state.status == "awaiting_approval"
    r.refuses(StartBuild(), "awaiting_approval")
    r(Approve("bob"))
    assert r.state.status == "queued"
    assert isinstance(r.history[-1], ReleaseApproved) and r.history[-1].by == "bob"
    r.refuses(Approve("carol"), "not awaiting approval")
    r.refuses(Reject("carol"), "not awaiting approval")
    r(StartBuild())
    assert isinstance(r.history[-1], BuildStarted)


def test_reject_is_terminal():
    r = release().requested(require_approval=True)(Reject("bob", "freeze"))
    assert r.state.status == "rejected" and r.state.terminal
    assert isinstance(r.history[-1], ReleaseRejected)
    r.refuses(Approve("bob"))


def test_reject_without_reason_gets_a_default():
    assert release().requested(require_approval=True)(Reject("bob")).state.reason == "rejected"


def test_approve_and_reject_need_a_pending_approval():
    r = release().requested()
    r.refuses(Approve("bob"), "not awaiting approval")
    r.refuses(Reject("bob"), "not awaiting approval")


def test_cancel_while_awaiting_approval():
    r = release().requested(require_approval=True)(Cancel("alice"))
    assert r.state.status == "cancelled" and r.state.reason == "cancelled"


# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["queued", "building", "deploying", "rolled-back"])
def test_cancel_ends_at_once_when_nothing_runs_and_nothing_switched(before: str):
    r = release().requested()
    if before == "building":
        r(StartBuild())
    elif before != "queued":
        r.built()
    if before == "rolled-back":
        r.up_to("web-1", "restart")(FailHost("web-1", "restart", "x"), RollBackHost("web-1", "rel-0"))
    r(Cancel("alice", "wrong ref"))
    assert r.state.status == "cancelled"
    assert isinstance(r.history[-1], ReleaseCancelled)


@pytest.mark.parametrize("at", ["upload-running", "pre-activate", "switching", "activated", "host-succeeded"])
def test_cancel_at_any_moment_stops_hosts_and_undoes_switches_first(at: str):
    r = release().ready()
    if at == "upload-running":
        r(StartHostStep("web-1", "upload"))
    if at == "pre-activate":
        r.up_to("web-1", "activate")  # every step before the switch finished; the switch not started
    if at == "switching":
        r.up_to("web-1", "activate")(StartHostStep("web-1", "activate"))
    if at == "activated":
        r.up_to("web-1", "restart")
    if at == "host-succeeded":
        r.host_done("web-1")
    r(Cancel("alice", "wrong ref"))
    assert isinstance(r.history[-1], ReleaseCancelRequested) and r.state.status == "cancelling"
    r.refuses(StartHostStep("web-2", "upload"), "cancelling")
    if r.state.hosts["web-1"].status == "running":
        step = r.state.hosts["web-1"].next_step()
        if r.state.hosts["web-1"].steps.get(step or "") is not None:  # the step in flight finishes
            r(FinishHostStep("web-1", step or "", 0, 1.0))
        r.refuses(StartHostStep("web-1", r.state.hosts["web-1"].next_step() or ""), "cancelling")
        r(FailHost("web-1", "x", "cancelled by alice", "CANCELLED"))
    r.refuses(Cancel("bob"), "being stopped or rolled back") if r.state.hosts["web-1"].activated else None
    if r.state.hosts["web-1"].activated:
        r(RollBackHost("web-1", "rel-0"))
    r(Cancel("bob"))
    e = r.history[-1]
    assert isinstance(e, ReleaseCancelled) and e.by == "alice" and e.reason == "wrong ref"


# --- build ----------------------------------------------------------------------------------


def test_build_twice_refused():
    r = release().requested()(StartBuild())
    r.refuses(StartBuild(), "building")


def test_source_twice_refused():
    r = release().requested()(StartBuild(), RecordSource(COMMIT))
    r.refuses(RecordSource(COMMIT), "already fetched")


def test_hook_and_artifact_need_fetched_source():
    r = release().requested()(StartBuild())
    r.refuses(RecordHook(0, "make", 0, 1.0), "no fetched source")
    r.refuses(RecordArtifact("sha256:00", 1, "zst"), "no fetched source")


def test_artifact_twice_refused():
    r = release().ready()
    r.refuses(RecordArtifact("sha256:01", 1, "zst"))


def test_build_failure_is_terminal_with_its_stage():
    r = release().requested()(StartBuild(), RecordSource(COMMIT), FailBuild("hooks", "npm ci exited 1"))
    assert r.state.status == "failed"
    assert r.state.reason == "build hooks failed: npm ci exited 1"


def test_build_failure_needs_a_build():
    release().requested().refuses(FailBuild("fetch", "x"), "no build in progress")


# --- evolve -----------------------------------------------------------------------------------


def test_evolve_keeps_previous_release_from_activate_detail():
    r = release().ready().up_to("web-1", "activate")
    r.steps("web-1", ["activate"], previous="rel-0042")
    assert r.state.hosts["web-1"].previous_release == "rel-0042"
    r.steps("web-1", HOST_STEPS[HOST_STEPS.index("activate") + 1 :])
    assert r.state.hosts["web-1"].previous_release == "rel-0042"


@pytest.mark.parametrize("detail", [{}, {"previous": None}, {"previous": 42}, {"other": "rel-9"}])
def test_evolve_previous_release_is_none_without_a_string(detail: dict[str, object]):
    r = release().ready().up_to("web-1", "activate")
    r(StartHostStep("web-1", "activate"), FinishHostStep("web-1", "activate", 0, 0.1, "", detail))
    h = r.state.hosts["web-1"]
    assert h.activated and h.previous_release is None


def test_previous_release_ignored_on_other_steps():
    r = release().ready()
    r(StartHostStep("web-1", "upload"), FinishHostStep("web-1", "upload", 0, 1.0, "", {"previous": "x"}))
    assert r.state.hosts["web-1"].previous_release is None


def test_evolve_sets_version_from_the_event():
    r = release().ready()
    assert r.state.version == r.history[-1].version == len(r.history)
    r(StartHostStep("web-1", "upload"))
    assert r.state.hosts["web-1"].version == r.history[-1].version == 1
    assert r.state.version == len(r.history) - 1  # a host's event leaves the release's number alone


def test_whole_release_guard_covers_release_events_first_steps_and_switches():
    r = release().ready()
    (first,) = decide(r.state, StartHostStep("web-1", "upload"), T0)
    assert guards_whole_release(first)
    r(StartHostStep("web-1", "upload"))
    (finish,) = decide(r.state, FinishHostStep("web-1", "upload", 0, 1.0), T0)
    assert not guards_whole_release(finish)
    r = release().ready().up_to("web-1", "activate")
    (switch,) = decide(r.state, StartHostStep("web-1", "activate"), T0)
    assert guards_whole_release(switch)
    assert guards_whole_release(decide(r.state, Cancel("bob"), T0)[0])
    (failed,) = decide(r.state, FailHost("web-1", "activate", "boom"), T0)
    assert not guards_whole_release(failed)


def test_cancel_while_a_host_is_switching_waits_for_it_and_rolls_it_back():
    r = release().ready().up_to("web-1", "activate")
    r(StartHostStep("web-1", "activate"))
    r(Cancel("bob"))
    assert r.state.status == "cancelling"
    r.refuses(Cancel("bob"), "being stopped")


def test_evolve_finish_without_a_start_uses_its_own_time():
    r = release().ready()
    finish = HostStepFinished(
        release_id=RID, version=r.state.hosts["web-1"].version + 1, at=T0 + timedelta(hours=1),
        host="web-1", step="upload", exit_code=0, duration=1.0,
    )  # fmt: skip
    state = evolve(r.state, finish)
    assert state.hosts["web-1"].steps["upload"].started_at == finish.at


def test_state_is_not_mutated_by_evolve():
    r = release().ready()
    before = r.state
    snapshot = (dict(before.hosts), before.hosts["web-1"].steps.copy())
    decide_events = decide(before, StartHostStep("web-1", "upload"), T0)
    evolve(before, decide_events[0])
    assert (dict(before.hosts), before.hosts["web-1"].steps) == snapshot


def test_artifact_event_fields_land_in_state():
    r = release().requested()(StartBuild(), RecordSource(COMMIT))
    r(RecordArtifact("sha256:ff", 77, "none", reused=True, log_digest="sha256:ee", duration=2.0))
    e = r.history[-1]
    assert isinstance(e, ArtifactPackaged) and e.log_digest == "sha256:ee" and e.duration == 2.0
    art = r.state.artifact
    assert art is not None and (art.digest, art.size, art.format, art.reused) == (
        "sha256:ff",
        77,
        "none",
        True,
    )


def test_release_failed_event_sets_reason():
    r = _failed_after_hosts()
    assert isinstance(r.history[-1], ReleaseFailed)


# --- canary pause and resume ------------------------------------------------------------------

THREE = ("web-1", "web-2", "web-3")


def paused(**kw: object) -> Release:
    """A canary of one host out of three whose canary batch succeeded, then paused."""
    r = release().ready(THREE, strategy="canary", **kw).host_done("web-1")
    return r(Pause())


def test_canary_pauses_after_the_canary_batch():
    r = paused()
    e = r.history[-1]
    assert isinstance(e, ReleasePaused)
    assert e.hosts_done == ("web-1",) and e.resume_at is None
    assert r.state.status == "paused" and r.state.was_paused and not r.state.terminal
    assert r.state.paused_at == e.at


def test_timed_pause_records_when_it_resumes():
    r = paused(canary_pause=90)
    e = r.history[-1]
    assert isinstance(e, ReleasePaused)
    assert e.resume_at == e.at + timedelta(seconds=90) == r.state.resume_at


def test_only_canary_hosts_start_before_the_pause():
    r = release().ready(THREE, strategy="canary", canary_size=2)
    r.refuses(StartHostStep("web-3", "upload"), "waits for the canary pause")
    r(StartHostStep("web-2", "upload"))


def test_pause_refused_until_the_canary_batch_is_done():
    r = release().ready(THREE, strategy="canary").up_to("web-1", "health")
    r.refuses(Pause(), "canary batch is not done")


def test_pause_refused_for_other_strategies_and_twice():
    r = release().ready(THREE, strategy="rolling", batch_size=1).host_done("web-1")
    r.refuses(Pause(), "only a canary")
    p = paused()(Resume("bob"))
    p.refuses(Pause(), "already happened")


def test_pause_refused_with_nothing_left_to_do():
    r = release().ready(("web-1",), strategy="canary").host_done("web-1")
    r.refuses(Pause(), "no host left")


def test_nothing_starts_while_paused():
    r = paused()
    r.refuses(StartHostStep("web-2", "upload"), "paused")
    r.refuses(StartHostStep("web-3", "upload"), "paused")


def test_resume_by_a_user_goes_on_and_lets_the_rest_start():
    r = paused()(Resume("bob"))
    assert isinstance(r.history[-1], ReleaseResumed) and r.history[-1].by == "bob"
    assert r.state.status == "deploying" and r.state.resumed_by == "bob"
    r.host_done("web-2").host_done("web-3")(Succeed())
    assert r.state.status == "succeeded"


def test_resume_only_when_paused():
    release().ready(THREE, strategy="canary").refuses(Resume("bob"), "not paused")
    r = paused()(Resume("bob"))
    r.refuses(Resume("bob"), "not paused")


def test_timer_resumes_only_once_the_time_has_come():
    r = paused(canary_pause=60)
    at = r.state.resume_at
    assert at is not None
    with pytest.raises(InvariantViolation, match="not come yet"):
        decide(r.state, Resume(TIMER), at - timedelta(seconds=1))
    (event,) = decide(r.state, Resume(TIMER), at)
    assert isinstance(event, ReleaseResumed) and event.by == TIMER


def test_timer_never_resumes_a_pause_that_waits_for_a_user():
    r = paused()
    with pytest.raises(InvariantViolation, match="no timer"):
        decide(r.state, Resume(TIMER), T0 + timedelta(days=365))


def test_a_user_may_resume_a_timed_pause_early():
    r = paused(canary_pause=3600)(Resume("bob"))
    assert r.state.status == "deploying"


def test_cancel_while_paused_rolls_back_the_canary_then_ends_cancelled():
    """A paused canary serves the new version: cancelling asks for a rollback first."""
    r = paused()(Cancel("bob", "5xx on the canary"))
    assert isinstance(r.history[-1], ReleaseCancelRequested)
    assert r.state.status == "cancelling" and not r.state.terminal
    r.refuses(StartHostStep("web-2", "upload"), "cancelling")
    r.refuses(Cancel("carol"), "stopped or rolled back")
    r(RollBackHost("web-1", "rel-0"))
    r(Cancel("carol"))
    e = r.history[-1]
    assert isinstance(e, ReleaseCancelled) and e.by == "bob" and e.reason == "5xx on the canary"
    assert r.state.status == "cancelled" and r.state.terminal


def test_cancel_outside_a_pause_once_a_host_runs_the_release_rolls_it_back_first():
    r = release().ready(THREE, strategy="canary").host_done("web-1")
    r(Cancel("bob"))
    assert r.state.status == "cancelling"


def test_pause_events_survive_the_wire():
    r = paused(canary_pause=5)(Resume("bob"))
    for e in r.history:
        assert decode(encode(e)) == e
    assert replay(RID, [decode(encode(e)) for e in r.history]) == r.state
