"""Rollout strategies: how a release's hosts are grouped, one registered implementation per name.

Pure. A ``Strategy`` says which hosts go before the canary pause (none: no pause), in which
batches the others go, and whether a batch waits for the one before it. The names are
``ferry.domain.vocabulary.STRATEGIES`` (the API, the database and the plan use them); every name
has exactly one implementation in ``REGISTRY``, checked when this module loads. The rollout policy
(``ferry.domain.rollout``) and the release's invariants (``ferry.domain.release.decide``) ask
``strategy_of(plan)``, never the name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from ferry.domain.events import Plan
from ferry.domain.vocabulary import STRATEGIES
from ferry.domain.vocabulary import Strategy as StrategyName


class Strategy(Protocol):
    name: StrategyName

    def canary(self, plan: Plan) -> tuple[str, ...]:
        """The hosts released before the pause, in plan order; () when the rollout does not pause."""
        ...

    def batches(self, plan: Plan, hosts: Sequence[str]) -> list[tuple[str, ...]]:
        """``hosts`` (the plan's hosts after the canary) in the batches they are released in."""
        ...

    def gated(self, plan: Plan) -> bool:
        """Whether a batch starts only once the one before it ended (else hosts fill free slots)."""
        ...


def _chunks(hosts: Sequence[str], size: int) -> list[tuple[str, ...]]:
    step = max(size, 1)
    return [tuple(hosts[i : i + step]) for i in range(0, len(hosts), step)]


class AllAtOnce:
    """Every host at once, up to ``concurrency`` in flight."""

    name: StrategyName = "all"

    def canary(self, plan: Plan) -> tuple[str, ...]:
        return ()

    def batches(self, plan: Plan, hosts: Sequence[str]) -> list[tuple[str, ...]]:
        return [tuple(hosts)] if hosts else []

    def gated(self, plan: Plan) -> bool:
        return False


class Rolling:
    """``batch_size`` hosts at a time (default: ``concurrency``), each batch ending before the next."""

    name: StrategyName = "rolling"

    def canary(self, plan: Plan) -> tuple[str, ...]:
        return ()

    def batches(self, plan: Plan, hosts: Sequence[str]) -> list[tuple[str, ...]]:
        return _chunks(hosts, plan.batch_size or plan.concurrency)

    def gated(self, plan: Plan) -> bool:
        return True


class Canary:
    """The first ``canary_size`` hosts, a pause, then the rest at once (in batches with ``batch_size``)."""

    name: StrategyName = "canary"

    def canary(self, plan: Plan) -> tuple[str, ...]:
        return plan.hosts[: plan.canary_size]

    def batches(self, plan: Plan, hosts: Sequence[str]) -> list[tuple[str, ...]]:
        if plan.batch_size is None:
            return [tuple(hosts)] if hosts else []
        return _chunks(hosts, plan.batch_size)

    def gated(self, plan: Plan) -> bool:
        return plan.batch_size is not None


REGISTRY: Final[dict[StrategyName, Strategy]] = {s.name: s for s in (AllAtOnce(), Rolling(), Canary())}
if tuple(REGISTRY) != STRATEGIES:  # a name without its implementation (or one too many) fails here
    raise RuntimeError(f"rollout strategies {sorted(REGISTRY)} do not match the vocabulary {STRATEGIES}")


def strategy_of(plan: Plan) -> Strategy:
    """The plan's rollout strategy."""
    return REGISTRY[plan.strategy]
