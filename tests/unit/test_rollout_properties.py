"""Properties of the rollout policy over every state an accepted history reaches."""

from __future__ import annotations

from hypothesis import example, given

from ferry.domain.events import HostStepStarted
from ferry.domain.release import ReleaseState, RollBackHost, StartHostStep, Succeed, decide
from ferry.domain.rollout import Finish, ScheduleBuild, ScheduleHost, ScheduleRollback, batches, next_actions
from tests.unit.release_histories import ROLLED_BACK_WITHOUT_FAILURE, SETTINGS, T0, History, histories

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
