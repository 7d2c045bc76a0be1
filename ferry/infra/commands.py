"""Carry out a command against a release's history: read what is new, decide, append, retry on conflict.

``Histories`` keeps each release's state in memory, folded by ``evolve``, together with the
stream positions it was read up to; every read asks the store only for what was appended
since (one batched direct get, no server-side consumer). ``execute`` is the one loop every
writer of release events shares (gateway, orchestrator, builder, agents); the pure decision
stays in ``ferry.domain.release``.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ferry.domain.errors import ConcurrencyError
from ferry.domain.events import Event, utcnow
from ferry.domain.release import Command, ReleaseState, decide, evolve, guards_whole_release
from ferry.infra.eventstore import EventStore, StoredEvent, legacy_subject, subject_of

KEEP = 4096
"""Releases whose state a process keeps in memory (least recently used ones are dropped)."""
KEEP_EVENTS = 200_000
"""Events folded into the states kept, all releases together: a state holds what its events
said (output tails up to 4 KiB each), so memory follows events, not releases. Measured: a
50-host release's state is ~95 KiB with empty outputs, ~160 KiB with 200-character ones."""


@dataclass(frozen=True)
class Loaded:
    """A release's state and how far it was read: the last sequence of the release and of each subject."""

    state: ReleaseState
    last_seq: int = 0
    heads: Mapping[str, int] = field(default_factory=dict)
    count: int = 0
    """Events folded into ``state``."""
    layout_seq: int = 0
    """The last sequence on the current layout's subjects (what a whole-release append is checked against)."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Events folded per subject of the current layout (what the stream's subject index says when
    nothing was appended since)."""

    def fold(self, stored: Iterable[StoredEvent]) -> Loaded:
        state, last, heads, count = self.state, self.last_seq, dict(self.heads), self.count
        layout, counts = self.layout_seq, dict(self.counts)
        for s in stored:
            if s.seq <= last:
                continue  # already folded
            state = evolve(state, s.event)
            last = s.seq
            subject = s.subject or subject_of(s.event)
            heads[subject] = s.seq
            if subject != legacy_subject(state.release_id):
                layout = s.seq
                counts[subject] = counts.get(subject, 0) + 1
            count += 1
        return Loaded(state, last, heads, count, layout, counts)

    @property
    def events(self) -> int:
        return self.count


class Histories:
    """The state of every release this process works on, caught up on demand."""

    def __init__(self, store: EventStore, *, keep: int = KEEP, keep_events: int = KEEP_EVENTS) -> None:
        self.store = store
        self.keep = keep
        self.keep_events = keep_events
        self._events = 0
        self._cache: OrderedDict[str, Loaded] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, release_id: str) -> asyncio.Lock:
        lock = self._locks.get(release_id)
        if lock is None:
            lock = self._locks[release_id] = asyncio.Lock()
        return lock

    def _remember(self, release_id: str, loaded: Loaded) -> None:
        before = self._cache.get(release_id)
        self._events += loaded.count - (before.count if before is not None else 0)
        self._cache[release_id] = loaded
        self._cache.move_to_end(release_id)
        while len(self._cache) > self.keep or (self._events > self.keep_events and len(self._cache) > 1):
            old, dropped = self._cache.popitem(last=False)
            self._events -= dropped.count
            lock = self._locks.get(old)
            if lock is not None and not lock.locked():
                del self._locks[old]

    async def get(self, release_id: str) -> Loaded:
        """The release as of now: what was cached plus whatever was appended since."""
        lock = self._lock(release_id)
        try:
            async with lock:
                cached = self._cache.get(release_id)
                if cached is None:
                    stored = await self.store.load(release_id)
                    loaded = Loaded(ReleaseState(release_id)).fold(stored)
                elif cached.state.terminal and await self.store.subject_counts(release_id) == cached.counts:
                    # a finished release nobody appended to: asking "what is new after N" would make
                    # the server walk everything appended after N; its subject index answers at once
                    loaded = cached
                else:
                    # only the current layout grows; the legacy subject was read on the first load
                    stored = await self.store.load(release_id, after=cached.last_seq, legacy=False)
                    loaded = cached.fold(stored)
                if loaded.count:
                    self._remember(release_id, loaded)
                return loaded
        finally:
            # reads of releases that do not exist (any id a client sends) leave nothing behind
            if release_id not in self._cache and not lock.locked():
                self._locks.pop(release_id, None)

    async def state(self, release_id: str) -> ReleaseState:
        return (await self.get(release_id)).state

    async def appended(self, before: Loaded, stored: list[StoredEvent], *, whole_release: bool) -> None:
        """Fold a writer's own events into the cache when nothing can have come between.

        Only an append guarded on the whole release proves that: nothing was appended to the
        release after ``before.last_seq`` but these events. A host's own append may have
        other hosts' events before it, which the next ``get`` reads in stream order.
        """
        rid = before.state.release_id
        async with self._lock(rid):
            current = self._cache.get(rid)
            if whole_release and (current is before or (current is None and before.count == 0)):
                self._remember(rid, before.fold(stored))

    def forget(self, release_id: str) -> None:
        dropped = self._cache.pop(release_id, None)
        if dropped is not None:
            self._events -= dropped.count


async def append_decided(histories: Histories, loaded: Loaded, events: list[Event]) -> list[StoredEvent]:
    """Append ``events`` decided from ``loaded``, guarded as the core asks; ConcurrencyError on a race."""
    whole = any(guards_whole_release(e) for e in events)
    expected = loaded.layout_seq if whole else loaded.heads.get(subject_of(events[0]), 0)
    seqs = await histories.store.append(events, expected_seq=expected, whole_release=whole)
    stored = [StoredEvent(seq, e, subject_of(e)) for seq, e in zip(seqs, events, strict=True)]
    await histories.appended(loaded, stored, whole_release=whole)
    return stored


CommandFor = Command | Callable[[ReleaseState], Command]
"""A command, or a function choosing it from the release's current state (called on every attempt)."""


async def execute_loaded(
    histories: Histories, release_id: str, command: CommandFor, *, attempts: int = 50
) -> Loaded:
    """Decide ``command`` against the current history and append what it decided; returns the
    release as of that append (its state, last sequence and event count: exact when the events
    guard the whole release, as every release-level event does).

    Another writer appending meanwhile (``ConcurrencyError``) means: read what it appended and
    decide again. ``InvariantViolation`` from the decision (or any error the chooser raises)
    propagates. After ``attempts`` conflicts the last ``ConcurrencyError`` propagates too.
    """
    for attempt in range(attempts):
        loaded = await histories.get(release_id)
        chosen = command(loaded.state) if callable(command) else command
        events = decide(loaded.state, chosen, utcnow())
        try:
            stored = await append_decided(histories, loaded, events)
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            if attempt >= 3:  # many writers on the whole release at once: spread them out
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
            continue
        return loaded.fold(stored)
    raise AssertionError("unreachable")


async def execute(
    histories: Histories, release_id: str, command: CommandFor, *, attempts: int = 50
) -> ReleaseState:
    """Decide ``command`` against the current history and append what it decided; returns the new state
    (see ``execute_loaded``)."""
    return (await execute_loaded(histories, release_id, command, attempts=attempts)).state
