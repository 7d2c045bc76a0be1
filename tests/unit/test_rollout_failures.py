"""Rollout policy's failure threshold: stop, wait, roll back, then fail; or tolerate and go on."""

from __future__ import annotations

from ferry.domain.release import Fail, RollBackHost, Succeed, decide
from ferry.domain.rollout import Finish, ScheduleHost, ScheduleRollback, failures
from tests.unit.rollout_builders import T0, Release, apply, scheduled

# --- failure threshold -----------------------------------------------------------------


def test_failures_lists_failed_hosts_even_after_rollback():
    r = Release(hosts=("h1", "h2"), concurrency=2).built()
    r.activate("h1").fail("h1")(RollBackHost("h1", "rel-0"))
    assert failures(r.state) == ["h1"]


def test_max_failures_zero_stops_waits_rolls_back_then_fails():
    r = Release(concurrency=3, max_failures=0, rollback_on_failure=True).built()
    apply(r, r.actions())  # h1, h2, h3 running
    r.finish_host("h1")  # h1 succeeded (activated)
    r.activate("h2")  # h2 activated, still running
    r.fail("h3", "upload", "disk full")  # h3 failed before activation

    # one failure is over the threshold: nothing new is scheduled while h2 is in flight
    assert r.actions() == []
    assert r.actions(include_running=True) == [ScheduleHost("h2")]

    r.fail("h2", "health", "503 after 5 tries")
    # nothing running any more: roll back the hosts already switched (h1 succeeded, h2 failed)
    assert r.actions() == [ScheduleRollback("h1"), ScheduleRollback("h2")]
    r(RollBackHost("h1", "rel-0"))
    assert r.actions() == [ScheduleRollback("h2")]
    r(RollBackHost("h2", "rel-0"))

    actions = r.actions()
    assert len(actions) == 1 and isinstance(actions[0], Finish)
    cmd = actions[0].command
    assert isinstance(cmd, Fail)
    assert "h3: disk full" in cmd.reason and "h2: 503 after 5 tries" in cmd.reason
    assert "2 of 5 host(s) failed" in cmd.reason
    assert "h4" not in cmd.reason and "h5" not in cmd.reason
    r(cmd)
    assert r.state.status == "failed"
    assert r.state.hosts["h4"].status == "waiting" and r.state.hosts["h5"].status == "waiting"
    assert r.actions() == []


def test_single_failure_reason_names_the_host():
    r = Release(concurrency=1, max_failures=0).built()
    r.start("h1").fail("h1", "upload", "connection refused")
    actions = r.actions()
    assert actions == [Finish(Fail("1 of 5 host(s) failed: h1: connection refused"))]


def test_failure_without_rollback_on_failure_fails_directly():
    r = Release(concurrency=2, max_failures=0, rollback_on_failure=False).built()
    r.start("h1").start("h2")
    r.finish_host("h1")
    r.activate("h2").fail("h2")
    actions = r.actions()
    assert len(actions) == 1 and isinstance(actions[0], Finish) and isinstance(actions[0].command, Fail)
    assert "h2: 503" in actions[0].command.reason


def test_failed_host_never_activated_is_not_rolled_back():
    r = Release(concurrency=2, max_failures=0).built()
    r.start("h1").start("h2")
    r.run_steps("h1", ["upload", "link"]).fail("h1", "pre_release", "migration failed")
    r.run_steps("h2", ["upload"]).fail("h2", "link", "x")
    actions = r.actions()
    assert not any(isinstance(a, ScheduleRollback) for a in actions)
    assert isinstance(actions[0], Finish)


def test_max_failures_one_tolerates_one_failure_and_continues():
    r = Release(concurrency=2, max_failures=1).built()
    apply(r, r.actions())  # h1, h2
    r.fail("h1", "upload", "unreachable")
    assert scheduled(r.actions()) == ["h3"]  # h1's slot is free again
    apply(r, r.actions())
    r.finish_host("h2")
    r.finish_host("h3")
    assert scheduled(r.actions()) == ["h4", "h5"]
    apply(r, r.actions())
    r.finish_host("h4")
    r.finish_host("h5")
    # everything ran; one host failed, so the release cannot succeed
    actions = r.actions()
    assert len(actions) == 1 and isinstance(actions[0], Finish)
    assert isinstance(actions[0].command, Fail) and "h1: unreachable" in actions[0].command.reason
    r(actions[0].command)
    assert r.state.status == "failed"


def test_max_failures_one_stops_at_the_second_failure():
    r = Release(concurrency=2, max_failures=1).built()
    apply(r, r.actions())
    r.fail("h1", "upload", "a")
    apply(r, r.actions())  # h3
    r.fail("h2", "upload", "b")
    assert r.actions() == []  # h3 still running
    r.fail("h3", "upload", "c")
    actions = r.actions()
    assert actions == [Finish(Fail("3 of 5 host(s) failed: h1: a; h2: b; h3: c"))]


def test_finish_fail_from_the_policy_is_accepted_by_the_aggregate():
    r = Release(hosts=("h1",), concurrency=1).built()
    r.activate("h1").fail("h1")
    assert r.actions() == [ScheduleRollback("h1")]
    r(RollBackHost("h1", None))
    (action,) = r.actions()
    assert isinstance(action, Finish)
    r(action.command)
    assert r.state.terminal


def test_policy_never_finishes_with_a_succeed_the_aggregate_refuses():
    r = Release(hosts=("h1", "h2"), concurrency=2).built()
    r.finish_host("h1")
    r.finish_host("h2")
    r(RollBackHost("h2", "rel-0"))  # a manual rollback, no HostFailed
    for action in r.actions():
        if isinstance(action, Finish):
            decide(r.state, action.command, T0)


def test_all_hosts_succeeded_finishes_with_succeed():
    r = Release(hosts=("h1",)).built()
    r.finish_host("h1")
    assert r.actions() == [Finish(Succeed())]
    assert r.actions(include_running=True) == [Finish(Succeed())]
