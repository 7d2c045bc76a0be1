"""Properties of every history the release aggregate accepts (histories drawn by release_histories)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
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
    ReleaseSucceeded,
    decode,
    encode,
    host_of,
)
from ferry.domain.release import ReleaseState, decide, evolve, replay
from tests.unit.release_histories import (
    BUILD_FAILED,
    FAILED_HOST_SUCCEEDS,
    HOST_EVENTS,
    HOST_FAILED_BEFORE_ARTIFACT,
    RID,
    ROLLED_BACK_WITHOUT_FAILURE,
    SETTINGS,
    T0,
    History,
    histories,
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
