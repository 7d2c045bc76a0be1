"""The read model's rows, written from release states: the projector folds each event with
``ferry.domain.release.evolve`` and writes what changed in the state, never reading events itself.

``ReleaseStates`` keeps the state of recent releases in memory (least recently used dropped), so
an event costs one fold; a release it does not hold is read back from the event store once.
``RowWriter`` is one transaction's work: states folded in it stay pending until it commits, so a
rolled-back batch leaves the cache as the database is.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ferry.db.models import HostStep, Release, ReleaseHost
from ferry.domain.events import ReleaseRequested
from ferry.domain.release import HostState, ReleaseState, evolve
from ferry.infra.eventstore import StoredEvent

log = logging.getLogger("ferry.infra.projector")

KEEP = 4096
"""Releases whose state the projector keeps in memory."""
KEEP_EVENTS = 200_000
"""Events folded into the states kept, all together (memory follows events: see
``ferry.infra.commands.KEEP_EVENTS``)."""

Loader = Callable[[str], Sequence[StoredEvent]]
"""Reads a release's whole history from the event store (called from the projector's thread)."""


@dataclass(frozen=True)
class Folded:
    """A release's state and the stream sequence of the last event folded into it."""

    seq: int
    state: ReleaseState
    count: int = 0
    """Events folded into ``state``."""

    def then(self, stored: StoredEvent) -> Folded:
        """This state with one more event folded in."""
        return Folded(stored.seq, evolve(self.state, stored.event), self.count + 1)


class ReleaseStates:
    """The states the projector folded, least recently used dropped beyond ``keep``."""

    def __init__(self, keep: int = KEEP, keep_events: int = KEEP_EVENTS) -> None:
        self.keep = keep
        self.keep_events = keep_events
        self._states: OrderedDict[str, Folded] = OrderedDict()
        self._events = 0
        self.reloads = 0
        """How many times a state was read back from the event store."""

    def get(self, release_id: str) -> Folded | None:
        return self._states.get(release_id)

    def put(self, release_id: str, folded: Folded) -> None:
        before = self._states.get(release_id)
        self._events += folded.count - (before.count if before is not None else 0)
        self._states[release_id] = folded
        self._states.move_to_end(release_id)
        while len(self._states) > self.keep or (self._events > self.keep_events and len(self._states) > 1):
            _, dropped = self._states.popitem(last=False)
            self._events -= dropped.count

    def clear(self) -> None:
        self._states.clear()
        self._events = 0


class Pending:
    """The states one transaction folded, read through to the cache until it commits.

    ``spill`` (a rebuild, whose one transaction covers the whole stream) drops the oldest pending
    states past the cache's size once their rows are written; they are read back when needed.
    """

    def __init__(self, states: ReleaseStates, load: Loader | None, *, spill: bool = False) -> None:
        self.states = states
        self.load = load
        self.spill = spill and load is not None
        self._folded: OrderedDict[str, Folded] = OrderedDict()

    def get(self, release_id: str) -> Folded | None:
        return self._folded.get(release_id) or self.states.get(release_id)

    def put(self, release_id: str, folded: Folded) -> None:
        self._folded[release_id] = folded
        self._folded.move_to_end(release_id)

    def trim(self) -> None:
        while self.spill and len(self._folded) > self.states.keep:
            self._folded.popitem(last=False)
        while (
            self.spill
            and len(self._folded) > 1
            and sum(f.count for f in self._folded.values()) > (self.states.keep_events)
        ):
            self._folded.popitem(last=False)

    def reload(self, release_id: str, before_seq: int) -> Folded:
        """The release as its events before ``before_seq`` make it, read from the event store."""
        if self.load is None:
            raise RuntimeError(
                f"the projector holds no state of release {release_id} before #{before_seq} "
                "and has no event store to read it from"
            )
        self.states.reloads += 1
        folded = Folded(0, ReleaseState(release_id))
        for stored in self.load(release_id):
            if stored.seq >= before_seq:
                break
            folded = folded.then(stored)
        return folded

    def commit(self) -> None:
        """The transaction committed: its states become the cache's."""
        for rid, folded in self._folded.items():
            self.states.put(rid, folded)
        self._folded.clear()


class RowWriter:
    """Fold a batch of events, then write the rows their states changed (inside the caller's
    transaction; a new writer per batch, as a rebuild expunges the session between batches)."""

    def __init__(self, session: Session, pending: Pending) -> None:
        self.session = session
        self.pending = pending
        self.touched: dict[str, tuple[ReleaseState, int]] = {}
        """Releases this batch applied events to: the state their rows show, the last sequence applied."""
        self._releases: dict[str, Release | None] = {}
        self._hosts: dict[tuple[str, str], ReleaseHost | None] = {}
        self._steps: dict[tuple[str, str, str], HostStep | None] = {}

    def fold(self, stored: StoredEvent) -> None:
        """Fold an event the read model already covers (applied by this or another projector).

        The projector sees the stream in order, so a state it holds missed nothing before it.
        """
        event = stored.event
        current = self.pending.get(event.release_id)
        if current is None and isinstance(event, ReleaseRequested):
            current = Folded(0, ReleaseState(event.release_id))
        if current is None or stored.seq <= current.seq:
            return  # not held (read back when one of its events is applied), or already folded
        self.pending.put(event.release_id, current.then(stored))

    def apply(self, stored: StoredEvent) -> None:
        """Fold an event the read model does not cover yet; ``write`` writes its rows."""
        event = stored.event
        rid = event.release_id
        current = self.pending.get(rid)
        if rid in self.touched:
            base = self.touched[rid][0]
            if current is None:
                current = self.pending.reload(rid, stored.seq)
        else:
            row = self._release_row(rid)
            if current is None and row is None:
                current = Folded(0, ReleaseState(rid))  # a release the read model has not seen
            elif current is None or current.seq != (0 if row is None else row.last_seq):
                current = self.pending.reload(rid, stored.seq)  # not held, or out of step with its rows
            base = current.state if row is not None else ReleaseState(rid)
        if current.state.status == "new" and not isinstance(event, ReleaseRequested):
            log.warning("event %s (seq %d) for unknown release %s: skipped", event.type, stored.seq, rid)
            return
        self.pending.put(rid, current.then(stored))
        self.touched[rid] = (base, stored.seq)

    def write(self) -> None:
        """Write the rows of every release this batch applied events to, from its state."""
        for rid, (base, seq) in self.touched.items():
            folded = self.pending.get(rid)
            assert folded is not None
            self._write_release(folded.state, base, seq)
        self.touched.clear()
        self.pending.trim()

    # --- rows ---
    def _release_row(self, release_id: str) -> Release | None:
        if release_id not in self._releases:
            self._releases[release_id] = self.session.get(Release, release_id)
        return self._releases[release_id]

    def _write_release(self, state: ReleaseState, base: ReleaseState, seq: int) -> None:
        rid = state.release_id
        row = self._release_row(rid)
        if row is None:
            row = self._releases[rid] = Release(id=rid)
            self.session.add(row)
        row.project, row.environment, row.ref = state.project, state.environment, state.ref
        row.requested_by, row.status, row.commit = state.requested_by, state.status, state.commit
        row.reason, row.finished_at = state.reason, state.finished_at
        if state.requested_at is not None:
            row.requested_at = state.requested_at
        art = state.artifact
        row.artifact_digest, row.artifact_size, row.artifact_reused = (
            (art.digest, art.size, art.reused) if art else (None, None, None)
        )
        row.last_version, row.last_seq = state.version, seq
        plan_hosts = state.plan.hosts if state.plan else ()
        for position, name in enumerate(plan_hosts):
            before, after = base.hosts.get(name), state.hosts[name]
            if before is not after:  # evolve makes a new HostState only for a host that changed
                self._write_host(rid, name, position, before, after)

    def _write_host(
        self, rid: str, name: str, position: int, before: HostState | None, after: HostState
    ) -> None:
        key = (rid, name)
        if key not in self._hosts:
            self._hosts[key] = self.session.get(ReleaseHost, key)
        row = self._hosts[key]
        if row is None:
            row = self._hosts[key] = ReleaseHost(release_id=rid, host=name)
            self.session.add(row)
        row.position, row.status, row.activated = position, after.status, after.activated
        row.failure, row.previous_release, row.release_dir = (
            after.failure,
            after.previous_release,
            after.release_dir,
        )
        for step, s in after.steps.items():
            if before is not None and before.steps.get(step) is s:
                continue
            skey = (rid, name, step)
            if skey not in self._steps:
                self._steps[skey] = self.session.get(HostStep, skey)
            srow = self._steps[skey]
            if srow is None:
                srow = self._steps[skey] = HostStep(release_id=rid, host=name, step=step)
                self.session.add(srow)
            srow.status, srow.started_at, srow.exit_code = s.status, s.started_at, s.exit_code
            srow.duration, srow.output_tail = s.duration, s.output_tail
