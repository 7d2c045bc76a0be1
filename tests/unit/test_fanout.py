"""The notifier's fan-out bookkeeping without a server: overflow, dedupe, catch-up hand-over."""

from __future__ import annotations

import asyncio
import json

from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from ferry.domain.events import Plan, Recipe, utcnow
from ferry.domain.release import RecordHook, RecordSource, RequestRelease, StartBuild, decide, evolve, replay
from ferry.infra.eventstore import StoredEvent
from services.notifier.fanout import Channel, Hub, Item, Outbox, event_frame, resync_frame, wire_frame
from services.notifier.metrics import Metrics

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a",))


def item(seq: int, rid: str = "r1", project: str = "p") -> Item:
    return Item(seq, rid, project, 0.0, f'{{"seq":{seq}}}')


def history(rid: str, project: str, hooks: int) -> list:
    state = replay(rid, [])
    events = []
    commands = [RequestRelease(project, "prod", "main", "alice", PLAN), StartBuild(), RecordSource("c" * 40)]
    commands += [RecordHook(i, f"make {i}", 0, 0.1) for i in range(hooks)]
    for command in commands:
        for e in decide(state, command, utcnow()):
            state = evolve(state, e)
            events.append(e)
    return events


class NoStore:
    """The hub must not touch the store when everything it needs is in the ring."""

    def __getattr__(self, name: str):
        raise AssertionError(f"unexpected store call {name}")


def test_outbox_overflow_is_sticky_and_drops_queued_items():
    box = Outbox(since=0, maxsize=3)
    assert all(box.offer(item(s)) for s in (1, 2, 3))
    assert box.offer(item(4)) is False
    assert box.overflowed
    assert box.offer(item(5)) is False
    assert box.take() == []  # nothing more is sent to a client told to resync


def test_outbox_dedupes_by_last_sent():
    box = Outbox(since=5, maxsize=10)
    for s in (4, 5, 6, 6, 7):
        box.offer(item(s))
    got = box.take()
    for i in got:
        box.sent(i)
    assert [i.seq for i in got] == [6, 7]
    assert box.last_sent == 7


def test_outbox_sent_never_goes_backwards():
    box = Outbox(since=9, maxsize=2)
    box.sent(item(3))
    assert box.last_sent == 9
    assert not box.fresh(item(9)) and box.fresh(item(10))


def test_frames_are_json_with_the_wire_event():
    e = history("r1", "p", 0)[0]
    frame = json.loads(event_frame(12, e))
    assert frame == {"kind": "event", "seq": 12, "event": json.loads(e.to_json())}
    assert json.loads(resync_frame(7, "slow")) == {"kind": "resync", "since": 7, "reason": "slow"}


async def test_subscribe_splits_backlog_and_live_without_gap_or_repeat():
    hub = Hub(NoStore(), ring_size=100, queue_size=100)  # type: ignore[arg-type]
    events = history("r1", "p", 6)
    for seq, e in enumerate(events[:5], start=1):
        await hub.publish(StoredEvent(seq, e))
    sub = hub.subscribe(Channel("release", "r1"), since=2)
    assert [i.seq for i in sub.backlog] == [3, 4, 5]
    assert sub.store_upto == 0  # the ring covers everything after since
    for seq, e in enumerate(events[5:], start=6):
        await hub.publish(StoredEvent(seq, e))
    sent = [i.seq async for i in hub.catch_up(sub)]
    for i in sent:
        sub.outbox.sent(item(i))
    for live in sub.outbox.take():
        sent.append(live.seq)
        sub.outbox.sent(live)
    assert sent == list(range(3, len(events) + 1))


async def test_subscribe_before_the_ring_reads_the_store():
    hub = Hub(NoStore(), ring_size=3, queue_size=100)  # type: ignore[arg-type]
    hub.head, hub.floor = 10, 11  # started at seq 10
    for seq, e in enumerate(history("r1", "p", 4), start=11):
        await hub.publish(StoredEvent(seq, e))
    assert hub.floor == 15 and [i.seq for i in hub.ring] == [15, 16, 17]
    sub = hub.subscribe(Channel("all"), since=8)
    assert (sub.store_from, sub.store_upto) == (9, 14)
    assert [i.seq for i in sub.backlog] == [15, 16, 17]
    assert hub.subscribe(Channel("all"), since=14).store_upto == 0


async def test_publish_filters_by_channel_and_learns_projects():
    hub = Hub(NoStore(), ring_size=100, queue_size=100)  # type: ignore[arg-type]
    by_release = hub.subscribe(Channel("release", "r2"), 0)
    by_project = hub.subscribe(Channel("project", "p1"), 0)
    everything = hub.subscribe(Channel("all"), 0)
    seq = 0
    for rid, project in (("r1", "p1"), ("r2", "p2"), ("r3", "p1")):
        for e in history(rid, project, 1):
            seq += 1
            await hub.publish(StoredEvent(seq, e))
    assert hub.projects == {"r1": "p1", "r2": "p2", "r3": "p1"}
    assert {i.release_id for i in by_release.outbox.items} == {"r2"}
    assert {i.release_id for i in by_project.outbox.items} == {"r1", "r3"}
    assert [i.seq for i in everything.outbox.items] == list(range(1, seq + 1))
    await hub.publish(StoredEvent(3, history("r9", "p9", 0)[0]))  # a repeat after a restart
    assert hub.head == seq


async def test_full_outbox_is_dropped_and_reported_while_others_continue():
    hub = Hub(NoStore(), ring_size=100, queue_size=2)  # type: ignore[arg-type]
    kicked = []
    slow = hub.subscribe(Channel("release", "r1"), 0, on_overflow=kicked.append)
    fast = hub.subscribe(Channel("release", "r1"), 0)
    for seq, e in enumerate(history("r1", "p", 3), start=1):
        await hub.publish(StoredEvent(seq, e))
        for i in fast.outbox.take():
            fast.outbox.sent(i)
    assert kicked == [slow] and slow not in hub.subscribers
    assert hub.overflows == 1
    assert fast.outbox.last_sent == hub.head == 6
    assert hub.counts() == {"release": 1, "project": 0, "all": 0}


class MemorySink:
    """A client socket in memory: records what is written; ``room`` frames fit before it backs up."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.closed = False
        self.drained_calls = 0
        self.got = asyncio.Event()

    @property
    def writable(self) -> bool:
        return len(self.written) < self.room

    def write(self, data: bytes) -> bool:
        self.written.append(data)
        self.got.set()
        return self.writable

    async def drained(self) -> None:
        self.drained_calls += 1


def texts(written: list[bytes]) -> list[str]:
    """The text messages in raw server frames, parsed by the websockets library's frame parser."""
    reader = StreamReader()
    reader.feed_data(b"".join(written))
    out = []
    while reader.buffer:
        try:
            next(Frame.parse(reader.read_exact, mask=False))
            raise AssertionError("truncated frame")
        except StopIteration as parsed:
            frame: Frame = parsed.value
        assert frame.opcode is Opcode.TEXT and frame.fin and not frame.rsv1
        out.append(bytes(frame.data).decode())
    return out


def test_wire_frame_is_the_text_frame_a_client_reads():
    for text in ('{"kind":"event"}', "é" * 200, "x" * 70_000):  # 7-bit, 16-bit and 64-bit lengths
        assert texts([wire_frame(text)]) == [text]


def test_outbox_take_returns_unsent_items_and_empties():
    box = Outbox(since=2, maxsize=10)
    for s in (1, 3, 4):
        box.offer(item(s))
    assert [i.seq for i in box.take()] == [3, 4]
    assert box.take() == [] and not box.items


async def test_live_clients_get_the_encoded_frames_written_directly_in_one_flush():
    metrics = Metrics()
    hub = Hub(NoStore(), ring_size=100, queue_size=100, metrics=metrics)  # type: ignore[arg-type]
    sinks = [MemorySink() for _ in range(3)]
    subs = [hub.subscribe(Channel("all"), 0, sink=s) for s in sinks]
    queued = hub.subscribe(Channel("all"), 0)  # no sink: its pump sends through ASGI
    assert all(sub.go_live() for sub in subs) and not queued.go_live()
    events = history("r1", "p", 2)
    for seq, e in enumerate(events, start=1):
        await hub.publish(StoredEvent(seq, e))
    assert all(s.written == [] for s in sinks) and subs[0].outbox.last_sent == 0  # not yet flushed
    hub.flush()  # what the event loop runs a moment after the first publish
    expected = [i.frame for i in hub.ring]
    for sink, sub in zip(sinks, subs, strict=True):
        assert len(sink.written) == 1  # every event published before the flush, in one write
        assert texts(sink.written) == expected
        assert sub.outbox.last_sent == len(events) and not sub.outbox.items and not sub.unflushed
    assert [i.seq for i in queued.outbox.take()] == list(range(1, len(events) + 1))
    assert metrics.direct == metrics.pushed == 3 * len(events)
    assert metrics.latency_count == 3 * len(events)
    await hub.publish(StoredEvent(len(events) + 1, history("r2", "p", 0)[0]))
    hub.flush()
    assert sinks[0].written[-1] is sinks[1].written[-1] is hub.ring[-1].wire  # encoded once for all


async def test_the_hub_flushes_by_itself_after_a_publish():
    hub = Hub(NoStore(), ring_size=100, queue_size=100)  # type: ignore[arg-type]
    sink = MemorySink()
    sub = hub.subscribe(Channel("all"), 0, sink=sink)
    assert sub.go_live()
    await hub.publish(StoredEvent(1, history("r1", "p", 0)[0]))
    await asyncio.wait_for(sink.got.wait(), 5)  # the flush is a call_later on the running loop
    assert texts(sink.written) == [hub.ring[-1].frame] and sub.outbox.last_sent == 1


async def test_a_backed_up_socket_sends_the_client_back_to_its_outbox_then_to_resync():
    hub = Hub(NoStore(), ring_size=100, queue_size=3)  # type: ignore[arg-type]
    kicked: list = []
    slow_sink, fast_sink = MemorySink(room=2), MemorySink()
    slow = hub.subscribe(Channel("release", "r1"), 0, on_overflow=kicked.append, sink=slow_sink)
    fast = hub.subscribe(Channel("release", "r1"), 0, sink=fast_sink)
    assert slow.go_live() and fast.go_live()
    events = history("r1", "p", 4)
    for seq, e in enumerate(events[:2], start=1):
        await hub.publish(StoredEvent(seq, e))
        hub.flush()
    assert not slow.live and slow.outbox.wake.is_set()  # the second write filled its socket
    assert slow.go_live() is False  # not while the socket is backed up
    for seq, e in enumerate(events[2:5], start=3):
        await hub.publish(StoredEvent(seq, e))
        hub.flush()
    assert [i.seq for i in slow.outbox.items] == [3, 4, 5] and not kicked
    await hub.publish(StoredEvent(6, events[5]))
    hub.flush()
    assert kicked == [slow] and slow not in hub.subscribers
    assert slow.outbox.last_sent == 2  # where its resync frame tells it to resume
    assert fast.live and fast.outbox.last_sent == 6 and len(fast_sink.written) == 6


async def test_unsubscribe_stops_direct_writes():
    hub = Hub(NoStore(), ring_size=100, queue_size=10)  # type: ignore[arg-type]
    sink = MemorySink()
    sub = hub.subscribe(Channel("project", "p"), 0, sink=sink)
    assert sub.go_live()
    hub.unsubscribe(sub)
    for seq, e in enumerate(history("r1", "p", 0), start=1):
        await hub.publish(StoredEvent(seq, e))
    hub.flush()
    assert sink.written == [] and hub.channels == {}


async def test_demoted_client_keeps_its_unflushed_items_in_order():
    hub = Hub(NoStore(), ring_size=100, queue_size=10)  # type: ignore[arg-type]
    sub = hub.subscribe(Channel("all"), 0, sink=MemorySink())
    assert sub.go_live()
    events = history("r1", "p", 2)
    for seq, e in enumerate(events[:3], start=1):
        await hub.publish(StoredEvent(seq, e))
    hub.demote(sub)  # e.g. its pump's heartbeat found the socket backed up
    for seq, e in enumerate(events[3:], start=4):
        await hub.publish(StoredEvent(seq, e))
    hub.flush()
    assert sub.sink.written == []  # type: ignore[union-attr]
    assert [i.seq for i in sub.outbox.take()] == list(range(1, len(events) + 1))
