"""Release events: wire round-trip, immutability, time in UTC, helpers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from ferry.domain import events as ev
from ferry.domain.events import EVENT_TYPES, HOST_STEPS, Event, ReleaseApproved, decode, encode, tail, utcnow
from tests.unit.event_samples import AT, SAMPLES, _ids, _plan, _wire


def test_every_event_type_has_a_sample():
    assert set(SAMPLES) == set(EVENT_TYPES)


def test_wire_type_names_are_unique_and_not_python_paths():
    names = [t.model_fields["type"].default for t in EVENT_TYPES]
    assert len(set(names)) == len(names)
    assert set(names) == ev.TYPE_NAMES
    for name in names:
        assert "ferry" not in name and name == name.lower()


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=_ids)
def test_round_trip_through_wire_form(event_type: type[Event]):
    event = SAMPLES[event_type]
    data = encode(event)
    assert isinstance(data, bytes)
    assert json.loads(data)["type"] == event.type
    back = decode(data)
    assert type(back) is event_type
    assert back == event
    # every accepted input form gives the same event
    assert decode(data.decode()) == event
    assert decode(json.loads(data)) == event
    assert encode(back) == data


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=_ids)
def test_events_are_frozen(event_type: type[Event]):
    event = SAMPLES[event_type]
    with pytest.raises(ValidationError):
        event.version = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.release_id = "other"  # type: ignore[misc]


def test_nested_plan_is_frozen_too():
    plan = _plan()
    with pytest.raises(ValidationError):
        plan.concurrency = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        plan.recipe.deploy_path = "/"  # type: ignore[misc]


def test_decode_does_not_mutate_a_dict_argument():
    payload = json.loads(encode(SAMPLES[ReleaseApproved]))
    before = json.dumps(payload, sort_keys=True)
    decode(payload)
    assert json.dumps(payload, sort_keys=True) == before


# --- time ------------------------------------------------------------------------


def test_utcnow_is_timezone_aware_utc():
    now = utcnow()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=_ids)
def test_decoded_at_is_timezone_aware_utc(event_type: type[Event]):
    event = decode(encode(SAMPLES[event_type]))
    assert event.at.tzinfo is not None
    assert event.at.utcoffset() == timedelta(0)
    assert event.at == AT


def test_at_on_the_wire_carries_utc_designator():
    at = json.loads(encode(SAMPLES[ReleaseApproved]))["at"]
    assert at.endswith("Z") or at.endswith("+00:00")


def test_naive_at_is_refused():
    payload = _wire(ReleaseApproved)
    payload["at"] = "2025-03-14T09:26:53"
    with pytest.raises(ValidationError):
        decode(payload)


def test_offset_at_is_normalised_to_utc():
    payload = _wire(ReleaseApproved)
    payload["at"] = "2025-03-14T17:26:53.589793+08:00"
    event = decode(payload)
    assert event.at == AT
    assert event.at.utcoffset() == timedelta(0)


# --- helpers --------------------------------------------------------------------


def test_tail_keeps_short_text():
    assert tail("abc", limit=10) == "abc"


def test_tail_cuts_long_text_and_marks_it():
    out = tail("x" * 50 + "END", limit=10)
    assert len(out) == 10
    assert out.startswith("…") and out.endswith("END")


def test_host_steps_order_matches_the_design():
    assert HOST_STEPS == ("upload", "link", "pre_release", "activate", "restart", "health", "post_release")
