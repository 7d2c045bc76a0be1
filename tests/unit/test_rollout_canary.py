"""Rollout policy's canary: the canary batch, the pause, resume, and failure in the canary."""

from __future__ import annotations

from ferry.domain.release import Cancel, Fail, Pause, Resume, RollBackHost, Succeed
from ferry.domain.rollout import Finish, ResumeAt, ScheduleRollback, batches
from tests.unit.rollout_builders import Release, apply, scheduled

# --- canary ---------------------------------------------------------------------------------


def test_canary_schedules_only_the_canary_batch_then_pauses():
    r = Release(strategy="canary", canary_size=2, concurrency=5).built()
    assert batches(r.state) == [("h1", "h2"), ("h3", "h4", "h5")]
    assert scheduled(r.actions()) == ["h1", "h2"]
    apply(r, r.actions())
    r.finish_host("h1")
    assert r.actions() == []
    r.finish_host("h2")
    (action,) = r.actions()
    assert isinstance(action, Finish) and isinstance(action.command, Pause)
    assert "2 of 2 host(s) succeeded" in action.command.reason
    r(action.command)
    assert r.state.status == "paused"
    assert r.actions() == [] and r.actions(include_running=True) == []  # nothing while paused


def test_timed_pause_asks_to_resume_at_its_time():
    r = Release(strategy="canary", canary_pause=30.0).built()
    apply(r, r.actions())
    r.finish_host("h1")
    (action,) = r.actions()
    assert isinstance(action, Finish)
    r(action.command)
    assert r.state.resume_at is not None
    assert r.actions() == [ResumeAt(r.state.resume_at)]


def test_after_resume_the_rest_goes_as_all_with_the_concurrency_cap():
    r = Release(strategy="canary", concurrency=3).built()
    apply(r, r.actions())
    r.finish_host("h1")
    r(Pause(), Resume("bob"))
    assert scheduled(r.actions()) == ["h2", "h3", "h4"]
    apply(r, r.actions())
    r.finish_host("h2")
    assert scheduled(r.actions()) == ["h5"]  # a sliding window, not batches


def test_after_resume_with_batch_size_the_rest_goes_in_batches():
    r = Release(strategy="canary", batch_size=2, concurrency=5).built()
    assert batches(r.state) == [("h1",), ("h2", "h3"), ("h4", "h5")]
    apply(r, r.actions())
    r.finish_host("h1")
    r(Pause(), Resume("bob"))
    assert scheduled(r.actions()) == ["h2", "h3"]
    apply(r, r.actions())
    r.finish_host("h2")
    assert r.actions() == []
    r.finish_host("h3")
    assert scheduled(r.actions()) == ["h4", "h5"]


def test_canary_failure_stops_and_rolls_back_without_pausing():
    r = Release(strategy="canary", canary_size=2, concurrency=2).built()
    apply(r, r.actions())
    r.finish_host("h1")
    r.activate("h2").fail("h2")
    assert r.actions() == [ScheduleRollback("h1"), ScheduleRollback("h2")]
    r(RollBackHost("h1", "rel-0"), RollBackHost("h2", "rel-0"))
    (action,) = r.actions()
    assert isinstance(action, Finish) and isinstance(action.command, Fail)
    assert r.state.hosts["h3"].status == "waiting"


def test_canary_covering_every_host_never_pauses():
    r = Release(hosts=("h1", "h2"), strategy="canary", canary_size=5, concurrency=2).built()
    apply(r, r.actions())
    r.finish_host("h1").finish_host("h2")
    assert r.actions() == [Finish(Succeed())]


def test_cancelled_pause_rolls_back_the_canary_then_ends():
    r = Release(strategy="canary", rollback_on_failure=False).built()
    apply(r, r.actions())
    r.finish_host("h1")
    r(Pause(), Cancel("bob", "canary looks bad"))
    assert r.state.status == "cancelling"
    assert r.actions() == [ScheduleRollback("h1")]  # even with rollback_on_failure off
    r(RollBackHost("h1", "rel-0"))
    (action,) = r.actions()
    assert action == Finish(Cancel("bob", "canary looks bad"))
    r(action.command)
    assert r.state.status == "cancelled"
    assert r.actions() == []
