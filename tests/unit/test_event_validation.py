"""Release events' strict validation: unknown types, missing, extra and invalid fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.domain.events import (
    EVENT_TYPES,
    ArtifactPackaged,
    BuildFailed,
    Event,
    HostStepFinished,
    ReleaseApproved,
    ReleaseRequested,
    UnknownEvent,
    decode,
)
from tests.unit.event_samples import AT, RID, _ids, _wire


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "release.exploded", "release_id": RID, "version": 1, "at": AT.isoformat()},
        {"type": "ReleaseRequested", "release_id": RID, "version": 1, "at": AT.isoformat()},
        {
            "type": "ferry.domain.events.ReleaseApproved",
            "release_id": RID,
            "version": 1,
            "at": AT.isoformat(),
        },
        {"release_id": RID, "version": 1, "at": AT.isoformat()},
        {"type": None},
        {"type": 3},
    ],
)
def test_decode_unknown_type_raises_unknown_event(payload: dict[str, Any]):
    with pytest.raises(UnknownEvent):
        decode(payload)
    with pytest.raises(UnknownEvent):
        decode(json.dumps(payload))


@pytest.mark.parametrize("data", [b"[]", b'"release.approved"', b"42", b"null"])
def test_decode_non_object_raises_unknown_event(data: bytes):
    with pytest.raises(UnknownEvent):
        decode(data)


@pytest.mark.parametrize("bad_type", [[], {"a": 1}])
def test_decode_unhashable_type_raises_unknown_event(bad_type: object):
    with pytest.raises(UnknownEvent):
        decode({"type": bad_type, "release_id": RID, "version": 1, "at": AT.isoformat()})


def test_unknown_event_is_a_value_error():
    assert issubclass(UnknownEvent, ValueError)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=_ids)
@pytest.mark.parametrize("missing", ["release_id", "version", "at"])
def test_missing_common_field_raises_validation_error(event_type: type[Event], missing: str):
    payload = _wire(event_type)
    del payload[missing]
    with pytest.raises(ValidationError):
        decode(payload)


def _required_own_fields(event_type: type[Event]) -> list[str]:
    common = set(Event.model_fields)
    return [n for n, f in event_type.model_fields.items() if n not in common and f.is_required()]


_REQUIRED = [(t, name) for t in EVENT_TYPES for name in _required_own_fields(t)]


@pytest.mark.parametrize(
    ("event_type", "missing"), _REQUIRED, ids=[f"{t.__name__}-{n}" for t, n in _REQUIRED]
)
def test_missing_own_field_raises_validation_error(event_type: type[Event], missing: str):
    payload = _wire(event_type)
    del payload[missing]
    with pytest.raises(ValidationError):
        decode(payload)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=_ids)
def test_extra_field_raises_validation_error(event_type: type[Event]):
    payload = _wire(event_type)
    payload["surprise"] = "x"
    with pytest.raises(ValidationError):
        decode(payload)


def test_extra_field_in_nested_plan_raises_validation_error():
    payload = _wire(ReleaseRequested)
    payload["plan"]["recipe"]["ssh_password"] = "hunter2"
    with pytest.raises(ValidationError):
        decode(payload)


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        (ReleaseApproved, "version", 0),
        (ReleaseApproved, "version", -1),
        (ReleaseApproved, "at", "yesterday"),
        (ArtifactPackaged, "format", "rar"),
        (BuildFailed, "stage", "deploy"),
        (HostStepFinished, "exit_code", "zero"),
    ],
)
def test_invalid_value_raises_validation_error(event_type: type[Event], field: str, value: object):
    payload = _wire(event_type)
    payload[field] = value
    with pytest.raises(ValidationError):
        decode(payload)


def test_plan_refuses_duplicate_hosts():
    payload = _wire(ReleaseRequested)
    payload["plan"]["hosts"] = ["web-1", "web-1"]
    with pytest.raises(ValidationError, match="unique"):
        decode(payload)
