"""The notifier's broadcast core: one follower of the event stream, a ring of recent events,
and one bounded outbox per client.

The follower never awaits a client: it offers each event to every matching outbox with a
non-blocking append; an outbox that is full is marked overflowed and its client is told to
resync. A client joining with ``since`` is registered first and snapshots the ring in the same
synchronous step, so every event is either in its backlog (seq <= head at registration) or
offered to its outbox (seq > head) — never both, never neither; ``last_sent`` dedupes anyway.
History older than the ring is read from the event store.

Each event is serialised once, as JSON and as a complete WebSocket text frame. A client whose
connection offers a synchronous ``Sink`` (the notifier's uvicorn protocol does) and that is caught
up is *live*: the hub writes the encoded frames straight to its socket, as a broadcast relay
would, with no task switch and no per-client encoding. Those writes are flushed a moment after
the event, at most as long as the last flush took (capped at ``COALESCE_MAX``): idle, that is at
once; when fan-out is the bottleneck, the events that arrive meanwhile go out to each client in
one write. A client that is behind (catching up, or its socket backed up) gets its items through
the outbox, and its pump writes what queued up in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from websockets.frames import Frame, Opcode

from ferry.domain.events import Event, ReleaseRequested
from ferry.infra.eventstore import ALL_EVENTS, EventStore, StoredEvent, release_subjects
from services.notifier.metrics import Metrics

log = logging.getLogger("ferry.notifier")

ChannelKind = Literal["release", "project", "all"]
COALESCE_MAX = 0.005  # seconds a live write may wait for the next events while fan-out is busy
DIRECT_SEND = "ferry.notifier.sink"
"""The ASGI scope extension under which the notifier's uvicorn protocol offers a ``Sink``."""


@dataclass(frozen=True)
class Channel:
    """What a client listens to: one release, every release of a project, or everything."""

    kind: ChannelKind
    key: str = ""

    def matches(self, release_id: str, project: str | None) -> bool:
        if self.kind == "release":
            return release_id == self.key
        if self.kind == "project":
            return project == self.key
        return True


@dataclass(frozen=True, slots=True)
class Item:
    """One event ready to send: its frame is serialised once and shared by every client."""

    seq: int
    release_id: str
    project: str | None
    at: float
    frame: str
    wire: bytes = b""  # ``frame`` as a whole WebSocket text frame (server to client: unmasked)


class Sink(Protocol):
    """A client's socket, written synchronously with frames encoded once for every client."""

    @property
    def closed(self) -> bool: ...
    @property
    def writable(self) -> bool: ...

    def write(self, data: bytes) -> bool:
        """Queue ``data`` (whole WebSocket frames) on the socket; False once it is backed up."""

    async def drained(self) -> None:
        """Return once the socket takes writes again (or is closed)."""


def wire_frame(text: str) -> bytes:
    """``text`` as one complete, unmasked, uncompressed WebSocket text frame."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def event_frame(seq: int, event: Event) -> str:
    return f'{{"kind":"event","seq":{seq},"event":{event.model_dump_json()}}}'


def heartbeat_frame(seq: int, ts: float | None = None) -> str:
    return json.dumps({"kind": "heartbeat", "seq": seq, "ts": time.time() if ts is None else ts})


def resync_frame(since: int, reason: str) -> str:
    return json.dumps({"kind": "resync", "since": since, "reason": reason})


async def _close(stream: AsyncIterator[StoredEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _iterate(events: list[StoredEvent]) -> AsyncIterator[StoredEvent]:
    for stored in events:
        yield stored


def make_item(stored: StoredEvent, project: str | None) -> Item:
    e = stored.event
    frame = event_frame(stored.seq, e)
    return Item(stored.seq, e.release_id, project, e.at.timestamp(), frame, wire_frame(frame))


class Outbox:
    """A client's bounded queue of live items plus the last sequence handed to its socket.

    Pure bookkeeping (no I/O): ``offer`` never blocks; a full outbox overflows once and stays
    overflowed; ``fresh`` drops anything at or below ``last_sent`` so catch-up and live items
    can overlap without a repeat.
    """

    def __init__(self, since: int, maxsize: int) -> None:
        self.last_sent = since
        self.maxsize = maxsize
        self.items: deque[Item] = deque()
        self.overflowed = False
        self.wake = asyncio.Event()

    def offer(self, item: Item) -> bool:
        """Queue ``item``; False when the outbox is (or just became) overflowed."""
        if self.overflowed:
            return False
        if len(self.items) >= self.maxsize:
            self.overflowed = True
            self.items.clear()
            self.wake.set()
            return False
        self.items.append(item)
        self.wake.set()
        return True

    def fresh(self, item: Item) -> bool:
        return item.seq > self.last_sent

    def sent(self, item: Item) -> None:
        self.last_sent = max(self.last_sent, item.seq)

    def take(self) -> list[Item]:
        """Every queued item not yet sent, in order (the outbox is empty afterwards)."""
        items, last = [], self.last_sent
        for item in self.items:
            if item.seq > last:  # in sequence order, each once
                items.append(item)
                last = item.seq
        self.items.clear()
        return items


@dataclass(eq=False)
class Subscriber:
    channel: Channel
    outbox: Outbox
    backlog: list[Item]
    store_from: int
    store_upto: int
    on_overflow: Callable[[Subscriber], None] | None = None
    sink: Sink | None = None
    live: bool = False
    """Caught up with an empty outbox and a socket taking writes: the hub writes directly."""
    unflushed: list[Item] = field(default_factory=list)
    """While live: items for the hub's next flush (all newer than ``outbox.last_sent``)."""
    connected_at: float = field(default_factory=time.monotonic)

    def go_live(self) -> bool:
        """Let the follower write to this client directly, if nothing waits and its socket takes writes."""
        self.live = self.sink is not None and not self.outbox.items and self.sink.writable
        return self.live


class Hub:
    """One shared follower of ``ferry.release.>`` per process, fanning out to subscribers."""

    def __init__(
        self,
        events: EventStore,
        *,
        ring_size: int = 4096,
        queue_size: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.events = events
        self.metrics = metrics or Metrics()
        self.ring: deque[Item] = deque()
        self.ring_size = ring_size
        self.queue_size = queue_size
        self.head = 0
        self.floor = 1  # every event with seq >= floor (and <= head) is in the ring
        self.projects: dict[str, str] = {}
        self.subscribers: set[Subscriber] = set()
        self.channels: dict[Channel, set[Subscriber]] = {}
        self.to_flush: list[Subscriber] = []
        self.flush_items: list[tuple[Item, int]] = []  # (item, live clients it went to) for metrics
        self.flush_at: asyncio.TimerHandle | None = None
        self.flush_cost = 0.0
        self.ready = asyncio.Event()
        self.overflows = 0

    # --- the follower --------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Follow the stream from its end at start-up until ``stop``: one pass, under ``supervise``."""
        if not self.ready.is_set():
            self.head = await self.events.last_seq()
            self.floor = self.head + 1
            self.ready.set()
        await self._follow(stop)

    async def _follow(self, stop: asyncio.Event) -> None:
        stream = self.events.follow(ALL_EVENTS, self.head + 1)
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(anext(stream))
                await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    return
                await self.publish(nxt.result())
        finally:
            stopping.cancel()
            await _close(stream)

    async def publish(self, stored: StoredEvent) -> None:
        """Add one event from the follower to the ring and offer it to every matching client."""
        if stored.seq <= self.head:
            return  # repeated after a follower restart
        project = await self.project_of(stored.event)
        item = make_item(stored, project)
        # No await from here on: subscribe() sees either the old head or this item in the ring.
        if len(self.ring) >= self.ring_size:
            self.floor = self.ring.popleft().seq + 1
        self.ring.append(item)
        self.head = stored.seq
        live = 0
        for sub in self._listeners(item):
            if sub.live:
                if not sub.unflushed:
                    self.to_flush.append(sub)
                sub.unflushed.append(item)
                live += 1
            elif not sub.outbox.offer(item):
                self._overflowed(sub)
        if live:
            self.flush_items.append((item, live))
            if self.flush_at is None:
                delay = min(self.flush_cost, COALESCE_MAX)
                self.flush_at = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        """Write every live client's unflushed frames, joined, in one write each."""
        started = time.perf_counter()
        self.flush_at = None
        subs, self.to_flush = self.to_flush, []
        items, self.flush_items = self.flush_items, []
        written = 0
        for sub in subs:
            batch, sub.unflushed = sub.unflushed, []
            if not batch or not sub.live or sub.sink is None:
                continue  # demoted (its batch went to the outbox) or gone
            sub.outbox.last_sent = batch[-1].seq
            written += len(batch)
            if not sub.sink.write(batch[0].wire if len(batch) == 1 else b"".join(i.wire for i in batch)):
                sub.live = False  # backed up: queue from now on; its pump waits for the socket
                sub.outbox.wake.set()
        now = time.time()
        for item, count in items:
            self.metrics.observe_latency(now - item.at, count)
        self.metrics.pushed += written
        self.metrics.direct += written
        self.flush_cost = time.perf_counter() - started

    def demote(self, sub: Subscriber) -> None:
        """Stop writing to ``sub`` directly (its socket backed up): its unflushed items go to its outbox."""
        sub.live = False
        batch, sub.unflushed = sub.unflushed, []
        for item in batch:
            if not sub.outbox.offer(item):
                self._overflowed(sub)
                return

    def _listeners(self, item: Item) -> list[Subscriber]:
        found: list[Subscriber] = []
        for channel in (
            Channel("all"),
            Channel("release", item.release_id),
            *((Channel("project", item.project),) if item.project is not None else ()),
        ):
            subs = self.channels.get(channel)
            if subs:
                found.extend(subs)
        return found

    async def project_of(self, event: Event) -> str | None:
        """The project a release belongs to, learnt from its ReleaseRequested (cached)."""
        if isinstance(event, ReleaseRequested):
            self.projects[event.release_id] = event.project
            return event.project
        known = self.projects.get(event.release_id)
        if known is not None:
            return known
        # Requested before this process started: its first event (either layout) says.
        for subject in release_subjects(event.release_id):
            stream = self.events.read(subject, 1)
            try:
                async for first in stream:
                    if isinstance(first.event, ReleaseRequested):
                        self.projects[event.release_id] = first.event.project
                        return first.event.project
                    break
            finally:
                await _close(stream)
        return None

    def _overflowed(self, sub: Subscriber) -> None:
        self.overflows += 1
        self.unsubscribe(sub)
        if sub.on_overflow is not None:
            sub.on_overflow(sub)

    # --- clients -------------------------------------------------------------
    def subscribe(
        self,
        channel: Channel,
        since: int,
        on_overflow: Callable[[Subscriber], None] | None = None,
        sink: Sink | None = None,
    ) -> Subscriber:
        """Register a client that saw everything up to ``since``; synchronous by design."""
        since = max(since, 0)
        backlog = [i for i in self.ring if i.seq > since and channel.matches(i.release_id, i.project)]
        store_upto = min(self.head, self.floor - 1) if since < self.floor - 1 else 0
        outbox = Outbox(since, self.queue_size)
        sub = Subscriber(channel, outbox, backlog, since + 1, store_upto, on_overflow, sink)
        self.subscribers.add(sub)
        self.channels.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.live = False
        sub.unflushed = []
        self.subscribers.discard(sub)
        subs = self.channels.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.channels[sub.channel]

    async def catch_up(self, sub: Subscriber) -> AsyncIterator[Item]:
        """The client's history before it joined: from the store (older than the ring), then the ring."""
        if sub.store_upto >= sub.store_from:
            if sub.channel.kind == "release":
                stream = _iterate(await self.events.load(sub.channel.key, after=sub.store_from - 1))
            else:
                stream = self.events.read(ALL_EVENTS, sub.store_from)
            try:
                async for stored in stream:
                    if stored.seq > sub.store_upto:
                        break
                    project = await self.project_of(stored.event)
                    if sub.channel.matches(stored.event.release_id, project):
                        yield make_item(stored, project)
            finally:
                await _close(stream)
        for item in sub.backlog:
            yield item
        sub.backlog = []

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"release": 0, "project": 0, "all": 0}
        for sub in self.subscribers:
            out[sub.channel.kind] += 1
        return out
