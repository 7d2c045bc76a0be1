"""The notifier's fan-out bookkeeping without a server: overflow, dedupe, catch-up hand-over."""

from __future__ import annotations

import json

from ferry.events import Plan, Recipe, utcnow
from ferry.eventstore import StoredEvent
from ferry.release import RecordHook, RecordSource, RequestRelease, StartBuild, decide, evolve, replay
from services.notifier.fanout import Channel, Hub, Item, Outbox, event_frame, resync_frame

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
    assert box.pop() is None  # nothing more is sent to a client told to resync


def test_outbox_dedupes_by_last_sent():
    box = Outbox(since=5, maxsize=10)
    for s in (4, 5, 6, 6, 7):
        box.offer(item(s))
    got = []
    while (i := box.pop()) is not None:
        got.append(i.seq)
        box.sent(i)
    assert got == [6, 7]
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
    while (live := sub.outbox.pop()) is not None:
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
        while (i := fast.outbox.pop()) is not None:
            fast.outbox.sent(i)
    assert kicked == [slow] and slow not in hub.subscribers
    assert hub.overflows == 1
    assert fast.outbox.last_sent == hub.head == 6
    assert hub.counts() == {"release": 1, "project": 0, "all": 0}
