"""The release aggregate's hosts: step order, activation, resuming after a crash, succeed/fail, failed
hosts and rollback.
"""

from __future__ import annotations

import pytest

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import HOST_STEPS, HostStepStarted
from ferry.domain.release import (
    Command,
    Fail,
    FailHost,
    FinishHostStep,
    RecordHook,
    RecordSource,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)
from tests.unit.release_builders import COMMIT, RID, T0, release

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
