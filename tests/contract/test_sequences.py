"""The golden event sequences (``tests/contract/sequences/*.json``: events in wire JSON and the
state summary they must produce), folded by ``evolve`` and shown by ``ferry.domain.views``; the
portal's JavaScript reducer runs the same files (``tests/js``, run by ``test_js_reducer.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.domain.events import TYPE_NAMES, decode
from ferry.domain.release import replay
from ferry.domain.views import release_view, summary

SEQUENCES = Path(__file__).parent / "sequences"


def sequences() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(SEQUENCES.glob("*.json"))}


@pytest.mark.parametrize("name", sorted(sequences()))
def test_a_golden_sequence_folds_into_its_expected_view(name: str) -> None:
    golden = sequences()[name]
    events = [decode(e) for e in golden["events"]]
    assert [e.model_dump(mode="json") for e in events] == golden["events"]  # wire form is stable
    state = replay(events[0].release_id, events)
    assert summary(release_view(state)) == golden["expected"]


def test_the_golden_sequences_use_every_event_type() -> None:
    used = {e["type"] for g in sequences().values() for e in g["events"]}
    assert used == TYPE_NAMES
