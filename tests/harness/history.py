"""Writing a release's history in tests: append events after whatever the release holds now."""

from __future__ import annotations

from collections.abc import Sequence

from ferry.domain.events import Event
from ferry.infra.eventstore import EventStore


async def append_next(store: EventStore, events: Sequence[Event]) -> int:
    """Append ``events`` (one release) at the release's current end; returns the last sequence.

    Tests build histories event by event; services append through ``ferry.infra.commands``.
    """
    stored = await store.load(events[0].release_id)
    last = max((s.seq for s in stored), default=0)
    seqs = await store.append(events, expected_seq=last, whole_release=True)
    return seqs[-1]
