"""The long-running loops every service shares (ferry.infra.worker): supervise, periodic, retrying."""

from __future__ import annotations

import asyncio

import pytest

from ferry.domain.errors import StoreUnavailable
from ferry.infra.worker import periodic, retrying, supervise


async def test_supervise_restarts_a_loop_that_fails_or_ends_until_stop() -> None:
    stop = asyncio.Event()
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("boom")  # a crash: restarted
        if len(runs) == 2:
            return  # ended early: restarted too
        stop.set()

    await asyncio.wait_for(supervise("test", loop, stop, backoff=0.01, max_backoff=0.02), 5)
    assert runs == [0, 1, 2]


async def test_periodic_goes_on_after_a_failed_pass_and_stops_on_stop() -> None:
    stop = asyncio.Event()
    passes: list[int] = []

    async def one() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise StoreUnavailable("NATS away")
        if len(passes) == 3:
            stop.set()

    await asyncio.wait_for(periodic(one, 0.01, stop), 5)
    assert passes == [0, 1, 2]


async def test_retrying_returns_the_first_success_and_reports_each_failure() -> None:
    attempts: list[int] = []
    heard: list[str] = []

    async def attempt() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise StoreUnavailable(f"not yet {len(attempts)}")
        return "open"

    got = await asyncio.wait_for(
        retrying("open", attempt, failed=lambda exc: heard.append(str(exc)), backoff=0.01), 5
    )
    assert (got, len(attempts), heard) == ("open", 3, ["not yet 1", "not yet 2"])


async def test_retrying_stops_at_a_fatal_failure() -> None:
    async def refused() -> None:
        raise StoreUnavailable("NATS refused the connection as 'gateway'")

    with pytest.raises(StoreUnavailable, match="refused"):
        await retrying("open", refused, fatal=lambda exc: "refused" in str(exc), backoff=0.01)
