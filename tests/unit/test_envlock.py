"""The environment lock's transitions (pure): one holder, a queue in request order, a growing token."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ferry.infra.envlock import EnvironmentBusy, EnvLock, forced, joined, left, parse

T = datetime(2026, 1, 1, tzinfo=UTC)
FREE = EnvLock("shop", "prod")


def test_the_first_release_holds_the_rest_queue_in_order() -> None:
    lock = joined(joined(joined(FREE, "a", T), "b", T), "c", T)
    assert (lock.holder, lock.waiting, lock.token) == ("a", ["b", "c"], 1)
    assert [lock.position(r) for r in ("a", "b", "c", "x")] == [0, 1, 2, None]
    assert joined(lock, "b", T) == lock, "joining twice changes nothing"


def test_the_holders_end_hands_the_lock_to_the_next_with_a_newer_token() -> None:
    lock = joined(joined(joined(FREE, "a", T), "b", T), "c", T)
    after = left(lock, "a", T)
    assert (after.holder, after.waiting, after.token) == ("b", ["c"], 2)
    assert left(after, "c", T).waiting == [], "a queued release that ends leaves the queue"
    assert left(after, "a", T) == after, "leaving twice changes nothing"
    empty = left(left(after, "b", T), "c", T)
    assert (empty.holder, empty.waiting) == (None, [])


def test_reject_when_busy_names_the_holder() -> None:
    lock = joined(FREE, "a", T)
    with pytest.raises(EnvironmentBusy, match="release a is running on shop/prod"):
        joined(lock, "b", T, reject_if_busy=True)
    assert joined(FREE, "b", T, reject_if_busy=True).holder == "b"


def test_forcing_fences_the_old_holder_out() -> None:
    lock = joined(joined(FREE, "a", T), "b", T)
    after = forced(lock, T)
    assert after.holder == "b" and after.token == lock.token + 2
    alone = forced(joined(FREE, "a", T), T)
    assert alone.holder is None and alone.token == 2


def test_the_entry_round_trips() -> None:
    lock = joined(joined(FREE, "a", T), "b", T)
    assert parse("shop", "prod", lock.to_json(), 9) == lock
