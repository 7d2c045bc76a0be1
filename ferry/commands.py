"""Carry out a command against a release's stored history: load, decide, append, retry on conflict.

The one loop every writer of release events shares (builder, agents); the pure decision stays in
``ferry.release``.
"""

from __future__ import annotations

import asyncio
import random

from ferry.errors import ConcurrencyError
from ferry.events import utcnow
from ferry.eventstore import EventStore
from ferry.release import Command, ReleaseState, decide, evolve, replay


async def load_state(store: EventStore, release_id: str) -> ReleaseState:
    """The release's state, replayed from its whole history."""
    return replay(release_id, [s.event for s in await store.load(release_id)])


async def execute(
    store: EventStore, release_id: str, command: Command, *, attempts: int = 50
) -> ReleaseState:
    """Decide ``command`` against fresh history and append what it decided; returns the new state.

    Another writer appending meanwhile (``ConcurrencyError``) means: load again and decide again.
    ``InvariantViolation`` from the decision propagates. After ``attempts`` conflicts the last
    ``ConcurrencyError`` propagates too.
    """
    for attempt in range(attempts):
        state = await load_state(store, release_id)
        events = decide(state, command, utcnow())
        try:
            await store.append(release_id, events, state.version)
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.02))  # many agents write one release at once
            continue
        for event in events:
            state = evolve(state, event)
        return state
    raise AssertionError("unreachable")
