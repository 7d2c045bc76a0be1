"""The release read model: a projection of the event stream into SQL.

Each write stores the stream sequence it covers in ``projection_position`` in the same
transaction, and skips anything at or below it, so redelivery changes nothing and a
crash between commit and ack repeats nothing. The projector reads no event itself: it folds
each one with ``ferry.domain.release.evolve`` (states of recent releases kept in memory) and
writes the rows from the state (``ferry.infra.release_rows``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.models import PROJECTED_TABLES, ProjectionPosition
from ferry.infra.bus import Bus, follow
from ferry.infra.eventstore import StoredEvent
from ferry.infra.release_rows import KEEP, Loader, Pending, ReleaseStates, RowWriter
from ferry.infra.subjects import ALL_EVENTS

log = logging.getLogger(__name__)

DEFAULT_POSITION = "releases"


def _loader(bus: Bus, loop: asyncio.AbstractEventLoop) -> Loader:
    """Read a release's history from the projector's worker thread, on the loop that owns the bus."""

    def load(release_id: str) -> list[StoredEvent]:
        return asyncio.run_coroutine_threadsafe(bus.events.load(release_id), loop).result(timeout=60)

    return load


def _begin_write(session: Session) -> None:
    # SQLite: BEGIN IMMEDIATE takes the write lock before the position is read (see
    # ferry.db.engine); PostgreSQL: the position row's FOR UPDATE lock serializes projectors.
    session.connection(execution_options={"ferry_write": True})


class Projector:
    """Applies stored release events to the read model, exactly once per sequence."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, batch_size: int = 500, keep: int = KEEP
    ) -> None:
        self.sessions = session_factory
        self.batch_size = batch_size
        self.states = ReleaseStates(keep)
        self.load: Loader | None = None
        """Reads a release's history when its state is not held (set by ``run`` and ``rebuild``)."""
        self._applied: dict[str, int] = {}
        self._changed: asyncio.Condition | None = None
        self._has_row: set[str] = set()

    # --- position ---
    def position(self, position_name: str = DEFAULT_POSITION) -> int:
        """The last sequence applied (0 before any), as committed in the database."""
        with self.sessions() as session:
            seq = session.scalar(
                select(ProjectionPosition.seq).where(ProjectionPosition.name == position_name)
            )
        return int(seq or 0)

    def _ensure_position_row(self, position_name: str) -> None:
        # A row to lock: concurrent projectors then serialize on it (SELECT ... FOR UPDATE).
        if position_name in self._has_row:
            return
        try:
            with self.sessions() as session, session.begin():
                _begin_write(session)
                if session.get(ProjectionPosition, position_name) is None:
                    session.add(ProjectionPosition(name=position_name, seq=0))
        except IntegrityError:
            pass  # another projector created it first
        self._has_row.add(position_name)

    # --- applying ---
    def apply(self, stored: StoredEvent, position_name: str = DEFAULT_POSITION) -> bool:
        """Apply one event in its own transaction; False if its sequence was already applied."""
        return self.apply_batch([stored], position_name) == 1

    def apply_batch(self, batch: Sequence[StoredEvent], position_name: str = DEFAULT_POSITION) -> int:
        """Apply events in one transaction (skipping sequences already applied); the count applied."""
        if not batch:
            return 0
        self._ensure_position_row(position_name)
        pending = Pending(self.states, self.load)
        with self.sessions() as session, session.begin():
            _begin_write(session)
            applied, seq = self._apply_locked(session, batch, position_name, pending)
        pending.commit()
        self._committed(position_name, seq)  # only now may wait() report it
        return applied

    def _committed(self, position_name: str, seq: int) -> None:
        self._applied[position_name] = max(self._applied.get(position_name, 0), seq)

    def _lock_position(self, session: Session, position_name: str) -> ProjectionPosition:
        row = session.scalars(
            select(ProjectionPosition)
            .where(ProjectionPosition.name == position_name)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if row is None:  # the row went away under us (schema recreated): start from nothing
            self._has_row.discard(position_name)
            row = ProjectionPosition(name=position_name, seq=0)
            session.add(row)
        return row

    def _apply_locked(
        self, session: Session, batch: Sequence[StoredEvent], position_name: str, pending: Pending
    ) -> tuple[int, int]:
        """Apply what is new in ``batch`` inside the caller's transaction: (count applied, position).

        Events at or below the position are folded too (another projector wrote their rows), so
        the states held stay in step with the stream.
        """
        position = self._lock_position(session, position_name)
        ordered = sorted(batch, key=lambda s: s.seq)
        todo = [s for s in ordered if s.seq > position.seq]
        rows = RowWriter(session, pending)
        for stored in ordered:
            if stored.seq <= position.seq:
                rows.fold(stored)
        if todo:
            with session.no_autoflush:
                for stored in todo:
                    self._project_one(rows, stored)
                rows.write()
            position.seq = todo[-1].seq
            session.flush()
        return len(todo), position.seq

    def _project_one(self, rows: RowWriter, stored: StoredEvent) -> None:
        rows.apply(stored)

    # --- following the stream ---
    async def run(self, bus: Bus, stop_event: asyncio.Event, position_name: str = DEFAULT_POSITION) -> None:
        """Follow the stream from the stored position until ``stop_event`` is set.

        The reader goes on from the last event it read when NATS comes back (``ferry.infra.bus.follow``).
        """
        self.load = _loader(bus, asyncio.get_running_loop())
        start = await asyncio.to_thread(self.position, position_name) + 1
        queue: asyncio.Queue[StoredEvent] = asyncio.Queue(maxsize=self.batch_size * 4)

        async def read() -> None:
            async for stored in follow(bus, ALL_EVENTS, start):
                await queue.put(stored)

        reader = asyncio.create_task(read(), name="projector-follow")
        stopper = asyncio.create_task(stop_event.wait(), name="projector-stop")
        try:
            while not stop_event.is_set():
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, stopper, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if reader in done:
                        reader.result()  # a failed subscription ends the projector loudly
                        raise RuntimeError("the event stream subscription ended")
                    break
                batch = [getter.result()]
                while len(batch) < self.batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                await self._apply_with_retry(batch, position_name, stop_event)
                await self._notify()
        finally:
            for task in (reader, stopper):
                task.cancel()
            await asyncio.gather(reader, stopper, return_exceptions=True)

    async def _apply_with_retry(
        self, batch: list[StoredEvent], position_name: str, stop_event: asyncio.Event
    ) -> None:
        delay = 0.1
        while True:
            try:
                await asyncio.to_thread(self.apply_batch, batch, position_name)
                return
            except OperationalError:  # database unreachable or locked: keep the batch and retry
                log.exception("projection %s: database error, retrying in %.1fs", position_name, delay)
                try:
                    await asyncio.wait_for(stop_event.wait(), delay)
                    return
                except TimeoutError:
                    delay = min(delay * 2, 5.0)

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    # A deadline is the point of this call ("is seq projected yet?"), hence the parameter.
    async def wait(
        self,
        seq: int,
        timeout: float = 10.0,  # noqa: ASYNC109
        position_name: str = DEFAULT_POSITION,
    ) -> None:
        """Return once ``seq`` is applied (by this or any projector); TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = self._condition()
        while True:
            if self._applied.get(position_name, 0) >= seq:
                return
            current = await asyncio.to_thread(self.position, position_name)
            if current >= seq:
                self._applied[position_name] = max(self._applied.get(position_name, 0), current)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"projection {position_name!r} is at {current}, not yet at {seq}")
            # Woken by this process's projector; the short poll covers projectors elsewhere.
            async with changed:
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, 0.2))
                except TimeoutError:
                    pass

    # --- rebuilding ---
    def _reset_locked(self, session: Session, position_name: str) -> None:
        _begin_write(session)
        self._lock_position(session, position_name).seq = 0
        for table in PROJECTED_TABLES:
            session.execute(delete(table))
        session.flush()
        session.expunge_all()
        self._applied.pop(position_name, None)
        self.states.clear()

    def _replay_batch(
        self, session: Session, batch: Sequence[StoredEvent], position_name: str, pending: Pending
    ) -> tuple[int, int]:
        result = self._apply_locked(session, batch, position_name, pending)
        session.expunge_all()  # keep memory flat over a long stream; the rows are flushed
        return result

    async def rebuild(self, bus: Bus, position_name: str = DEFAULT_POSITION) -> int:
        """Delete the projected rows and replay the whole stream, in one transaction; events applied.

        Readers see the old read model until the new one is complete, and projectors elsewhere
        wait on the position lock instead of interleaving (on SQLite, other writers wait too).
        """
        self.load = _loader(bus, asyncio.get_running_loop())
        await asyncio.to_thread(self._ensure_position_row, position_name)
        session = self.sessions()
        pending = Pending(self.states, self.load, spill=True)
        count = 0
        try:
            # One session used from worker threads in turn, never at once.
            await asyncio.to_thread(self._reset_locked, session, position_name)
            batch: list[StoredEvent] = []
            seq = 0
            replay = functools.partial(
                self._replay_batch, session, position_name=position_name, pending=pending
            )
            async for stored in bus.events.read(ALL_EVENTS):
                batch.append(stored)
                if len(batch) >= self.batch_size:
                    n, seq = await asyncio.to_thread(
                        self._replay_batch, session, batch, position_name, pending
                    )
                    count += n
                    batch = []
            n, seq = await asyncio.to_thread(replay, batch)
            count += n
            await asyncio.to_thread(session.commit)
        except BaseException:
            await asyncio.to_thread(session.rollback)
            self._applied.pop(position_name, None)
            self.states.clear()  # the rows are as before the rebuild began: read states back
            raise
        finally:
            await asyncio.to_thread(session.close)
        pending.commit()
        self._committed(position_name, seq)
        await self._notify()
        return count


async def rebuild(bus: Bus, session_factory: sessionmaker[Session], **kwargs: Any) -> int:
    """Replay the whole event stream into an emptied read model (``ferry projections rebuild``)."""
    return await Projector(session_factory).rebuild(bus, **kwargs)
