"""Rollout policy: what work a release needs next, from its state alone (before deploying, concurrency)."""

from __future__ import annotations

import pytest

from ferry.domain.release import Approve, Cancel, RecordSource, ReleaseState, StartBuild, Succeed
from ferry.domain.rollout import Finish, ScheduleBuild, ScheduleHost, next_actions
from tests.unit.rollout_builders import FIVE, Release, apply, scheduled

# --- before deploying ---------------------------------------------------------------


def test_new_release_needs_nothing():
    assert next_actions(ReleaseState("rel-1")) == []


def test_awaiting_approval_needs_nothing():
    r = Release(require_approval=True)
    assert r.state.status == "awaiting_approval"
    assert r.actions() == [] and r.actions(include_running=True) == []


def test_queued_needs_a_build():
    r = Release()
    assert r.state.status == "queued"
    assert r.actions() == [ScheduleBuild()]


def test_approved_needs_a_build():
    r = Release(require_approval=True)(Approve("bob"))
    assert r.actions() == [ScheduleBuild()]


def test_building_still_asks_for_the_build():
    r = Release()(StartBuild())
    assert r.actions() == [ScheduleBuild()]
    r(RecordSource("c0ffee"))
    assert r.actions() == [ScheduleBuild()]


def test_terminal_release_needs_nothing():
    r = Release()(Cancel("alice"))
    assert r.actions() == [] and r.actions(include_running=True) == []


def test_release_after_artifact_schedules_hosts():
    r = Release(concurrency=1).built()
    assert r.state.status == "deploying"
    assert r.actions() == [ScheduleHost("h1")]


# --- concurrency ----------------------------------------------------------------------


def test_concurrency_cap_two_of_five():
    r = Release(concurrency=2).built()
    assert scheduled(r.actions()) == ["h1", "h2"]
    apply(r, r.actions())
    assert r.actions() == []  # both slots busy
    r.finish_host("h1")
    assert scheduled(r.actions()) == ["h3"]
    apply(r, r.actions())
    assert r.actions() == []
    r.finish_host("h2")
    r.finish_host("h3")
    assert scheduled(r.actions()) == ["h4", "h5"]
    apply(r, r.actions())
    r.finish_host("h4")
    assert r.actions() == []  # h5 still running, nothing waiting
    r.finish_host("h5")
    assert r.actions() == [Finish(Succeed())]
    r(Succeed())
    assert r.state.status == "succeeded"
    assert r.actions() == []


def test_scheduling_is_idempotent_until_hosts_start():
    r = Release(concurrency=2).built()
    assert r.actions() == r.actions() == [ScheduleHost("h1"), ScheduleHost("h2")]


def test_concurrency_larger_than_hosts_schedules_all():
    r = Release(concurrency=10).built()
    assert scheduled(r.actions()) == list(FIVE)


@pytest.mark.parametrize("concurrency", [0, -3])
def test_concurrency_below_one_still_makes_progress(concurrency: int):
    r = Release(concurrency=concurrency).built()
    assert scheduled(r.actions()) == ["h1"]


def test_host_order_follows_the_plan():
    r = Release(hosts=("c", "a", "b"), concurrency=2).built()
    assert scheduled(r.actions()) == ["c", "a"]


def test_a_host_between_steps_still_holds_its_slot():
    r = Release(concurrency=1).built()
    r.run_steps("h1", ["upload", "link"])
    assert r.state.hosts["h1"].status == "running"
    assert r.actions() == []


def test_include_running_re_asks_for_hosts_in_flight():
    r = Release(concurrency=2).built()
    apply(r, r.actions())
    assert r.actions() == []
    assert r.actions(include_running=True) == [ScheduleHost("h1"), ScheduleHost("h2")]
    r.finish_host("h1")
    assert r.actions(include_running=True) == [ScheduleHost("h2"), ScheduleHost("h3")]


def test_include_running_with_nothing_running_is_the_same():
    r = Release(concurrency=2).built()
    assert r.actions(include_running=True) == r.actions()
