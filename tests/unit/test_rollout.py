"""Rollout policy: what work a release needs next, from its state alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe
from ferry.domain.release import (
    Approve,
    Cancel,
    Command,
    Fail,
    FailHost,
    FinishHostStep,
    Pause,
    RecordArtifact,
    RecordSource,
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
from ferry.domain.rollout import (
    Finish,
    ResumeAt,
    ScheduleBuild,
    ScheduleHost,
    ScheduleRollback,
    batches,
    failures,
    next_actions,
)

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
FIVE = ("h1", "h2", "h3", "h4", "h5")


class Release:
    def __init__(self, hosts: Sequence[str] = FIVE, **plan: object) -> None:
        self.state = ReleaseState("rel-1")
        self.history: list[Event] = []
        recipe = Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app")
        self(RequestRelease("app", "prod", "main", "alice", Plan(recipe=recipe, hosts=tuple(hosts), **plan)))  # type: ignore[arg-type]

    def __call__(self, *commands: Command) -> Release:
        for command in commands:
            for event in decide(self.state, command, T0 + timedelta(seconds=len(self.history))):
                self.state = evolve(self.state, event)
                self.history.append(event)
        return self

    def built(self) -> Release:
        return self(StartBuild(), RecordSource("c0ffee"), RecordArtifact("sha256:00", 1, "zst"))

    def start(self, host: str) -> Release:
        return self(StartHostStep(host, "upload"))

    def run_steps(self, host: str, steps: Sequence[str]) -> Release:
        for step in steps:
            h = self.state.hosts[host]
            if not (step in h.steps and h.steps[step].status == "running"):
                self(StartHostStep(host, step))
            self(FinishHostStep(host, step, 0, 0.1))
        return self

    def finish_host(self, host: str) -> Release:
        """Run every remaining step of ``host`` to success."""
        h = self.state.hosts[host]
        nxt = h.next_step()
        assert nxt is not None
        return self.run_steps(host, HOST_STEPS[HOST_STEPS.index(nxt) :])

    def activate(self, host: str) -> Release:
        """Run ``host`` through activate (inclusive); it stays running."""
        return self.run_steps(host, HOST_STEPS[: HOST_STEPS.index("activate") + 1])

    def fail(self, host: str, step: str = "health", reason: str = "503") -> Release:
        return self(FailHost(host, step, reason))

    def actions(self, **kw: bool) -> list[object]:
        return list(next_actions(self.state, **kw))


def scheduled(actions: Sequence[object]) -> list[str]:
    return [a.host for a in actions if isinstance(a, ScheduleHost)]


def apply(r: Release, actions: Sequence[object]) -> None:
    """Act on what the policy asked for, as the orchestrator and agents would (start the hosts)."""
    for a in actions:
        if isinstance(a, ScheduleHost) and r.state.hosts[a.host].status == "waiting":
            r.start(a.host)


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


# --- rolling batches ---------------------------------------------------------------------


def test_rolling_releases_one_batch_at_a_time_in_plan_order():
    r = Release(strategy="rolling", batch_size=2, concurrency=10).built()
    assert batches(r.state) == [("h1", "h2"), ("h3", "h4"), ("h5",)]
    assert scheduled(r.actions()) == ["h1", "h2"]
    apply(r, r.actions())
    r.finish_host("h1")
    assert r.actions() == []  # h2 still in flight: the next batch waits for the whole batch
    r.finish_host("h2")
    assert scheduled(r.actions()) == ["h3", "h4"]
    apply(r, r.actions())
    r.finish_host("h3").finish_host("h4")
    assert scheduled(r.actions()) == ["h5"]
    apply(r, r.actions())
    r.finish_host("h5")
    assert r.actions() == [Finish(Succeed())]


def test_rolling_concurrency_still_caps_hosts_in_flight_inside_a_batch():
    r = Release(strategy="rolling", batch_size=3, concurrency=2).built()
    assert scheduled(r.actions()) == ["h1", "h2"]
    apply(r, r.actions())
    r.finish_host("h1")
    assert scheduled(r.actions()) == ["h3"]  # still batch one
    apply(r, r.actions())
    r.finish_host("h2")
    assert r.actions() == []  # h3 (batch one) in flight
    r.finish_host("h3")
    assert scheduled(r.actions()) == ["h4", "h5"]


def test_rolling_without_batch_size_uses_batches_of_concurrency():
    r = Release(strategy="rolling", concurrency=2).built()
    assert batches(r.state) == [("h1", "h2"), ("h3", "h4"), ("h5",)]


def test_rolling_failure_threshold_stops_between_batches_and_rolls_back():
    r = Release(strategy="rolling", batch_size=2, concurrency=2).built()
    apply(r, r.actions())
    r.finish_host("h1")
    r.activate("h2").fail("h2")
    assert r.actions() == [ScheduleRollback("h1"), ScheduleRollback("h2")]


def test_rolling_failure_within_threshold_moves_to_the_next_batch():
    r = Release(strategy="rolling", batch_size=2, concurrency=2, max_failures=1).built()
    apply(r, r.actions())
    r.finish_host("h1")
    r.fail("h2", "upload", "unreachable")
    assert scheduled(r.actions()) == ["h3", "h4"]


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


def test_every_strategy_name_has_one_registered_implementation():
    from ferry.domain.rollout import REGISTRY, strategy_of
    from ferry.domain.vocabulary import STRATEGIES

    assert tuple(REGISTRY) == STRATEGIES
    recipe = Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app")
    for name in STRATEGIES:
        plan = Plan(recipe=recipe, hosts=FIVE, strategy=name, batch_size=2, canary_size=1)
        strategy = strategy_of(plan)
        assert strategy.name == name
        rest = [h for h in FIVE if h not in strategy.canary(plan)]
        assert [
            h for batch in strategy.batches(plan, rest) for h in batch
        ] == rest  # each host once, in order


@pytest.mark.parametrize(
    ("strategy", "batch_size", "expected"),
    [
        ("all", 2, [FIVE]),
        ("rolling", 2, [("h1", "h2"), ("h3", "h4"), ("h5",)]),
        ("canary", None, [("h1",), ("h2", "h3", "h4", "h5")]),
        ("canary", 3, [("h1",), ("h2", "h3", "h4"), ("h5",)]),
    ],
)
def test_batches_per_strategy(strategy, batch_size, expected):
    assert batches(Release(strategy=strategy, batch_size=batch_size).state) == expected
