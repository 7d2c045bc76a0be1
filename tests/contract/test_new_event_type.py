"""A new event type must fail loudly wherever it is not handled yet.

Each golden sequence gets one more event of a type no fold knows (``fake_event``), and every
reader of release events refuses it with a typed error instead of skipping it: ``evolve``, the
view API and CLI share, the CLI's watch, the read-model projector, the notifier's webhook fold
and the portal's JavaScript reducer (``tests/js``, the same refusal per sequence).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from ferry.cli.watch import ReleaseView as WatchView
from ferry.domain import webhooks
from ferry.domain.events import Event, UnknownEvent, decode
from ferry.domain.release import UnknownEventType, replay
from ferry.domain.views import release_view
from ferry.infra.eventstore import StoredEvent
from ferry.infra.projector import Projector
from ferry.infra.secrets import SecretBox
from services.notifier.webhooks import Deliverer
from tests.contract.fake_event import FAKE_TYPE, fake_event
from tests.contract.test_sequences import sequences
from tests.harness.history import append_next

ROOT = Path(__file__).resolve().parents[2]


def with_fake(name: str) -> list[Event]:
    events = [decode(e) for e in sequences()[name]["events"]]
    last = events[-1]
    return [*events, fake_event(last.release_id, last.version + 1)]


@pytest.mark.parametrize("name", sorted(sequences()))
def test_evolve_and_the_view_refuse_it(name: str) -> None:
    events = with_fake(name)
    state = replay(events[0].release_id, events[:-1])
    assert webhooks.ReleaseInfo.of(state).status == state.status  # the webhook's status is the state's
    with pytest.raises(UnknownEventType, match=FAKE_TYPE):
        release_view(replay(events[0].release_id, events))


@pytest.mark.parametrize("name", sorted(sequences()))
def test_the_cli_watch_refuses_it(name: str) -> None:
    events = with_fake(name)
    view = WatchView(events[0].release_id)
    for seq, e in enumerate(events[:-1], start=1):
        view.apply(seq, e)
    with pytest.raises(UnknownEventType, match=FAKE_TYPE):
        view.apply(len(events), events[-1])


def test_the_projector_refuses_it_and_writes_nothing(session_factory) -> None:
    projector = Projector(session_factory)
    seq = 0
    for name in sorted(sequences()):
        events = with_fake(name)
        batch = [StoredEvent(seq + i, e) for i, e in enumerate(events, start=1)]
        before = projector.position()
        with pytest.raises(UnknownEventType, match=FAKE_TYPE):
            projector.apply_batch(batch)
        assert projector.position() == before  # the whole batch rolled back
        assert projector.apply_batch(batch[:-1]) == len(batch) - 1  # without it, all goes in
        seq += len(events)


async def test_the_notifier_webhook_fold_refuses_it(bus, session_factory) -> None:
    events = with_fake("succeeded_after_approval")
    await append_next(bus.events, events[:-1])
    last = await append_next(bus.events, events[-1:])  # an event type this ferry cannot read
    async with httpx.AsyncClient() as http:
        deliverer = Deliverer(bus, session_factory, SecretBox(b"k" * 32), http)
        with pytest.raises(UnknownEvent, match=FAKE_TYPE):
            await deliverer._state_at(events[0].release_id, last)


def test_the_portal_reducer_refuses_it() -> None:
    done = subprocess.run(
        ["node", "--test", "--test-name-pattern", "refused", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert f"# pass {len(sequences()) + 1}" in done.stdout
