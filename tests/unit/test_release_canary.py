"""The release aggregate's canary pause and resume: by a user, by the timer, and cancel while paused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.domain.errors import InvariantViolation
from ferry.domain.events import (
    ReleaseCancelled,
    ReleaseCancelRequested,
    ReleasePaused,
    ReleaseResumed,
    decode,
    encode,
)
from ferry.domain.release import (
    TIMER,
    Cancel,
    Pause,
    Resume,
    RollBackHost,
    StartHostStep,
    Succeed,
    decide,
    replay,
)
from tests.unit.release_builders import RID, T0, Release, release

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
