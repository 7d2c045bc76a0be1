"""Rollout policy's batches: rolling batches, and the batches every strategy makes."""

from __future__ import annotations

import pytest

from ferry.domain.events import Plan, Recipe
from ferry.domain.release import Succeed
from ferry.domain.rollout import Finish, ScheduleRollback, batches
from tests.unit.rollout_builders import FIVE, Release, apply, scheduled

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
