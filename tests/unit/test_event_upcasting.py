"""Release events' upcasting: old versions are upcast on decode, in a chain, per known type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.domain import events as ev
from ferry.domain.events import UPCASTERS, ReleaseApproved, ReleaseCancelled, decode, encode
from tests.unit.event_samples import RID, SAMPLES

# --- upcasting ------------------------------------------------------------------


@pytest.fixture
def upcasters() -> Iterator[dict[Any, Any]]:
    """Register temporary upcasters; the registry is restored afterwards."""
    saved = dict(UPCASTERS)
    try:
        yield UPCASTERS
    finally:
        UPCASTERS.clear()
        UPCASTERS.update(saved)


def test_upcaster_is_applied_on_decode(upcasters: dict[Any, Any]):
    # pretend version 0 of release.approved called the approver "approver"
    def v0_to_v1(payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        payload["by"] = payload.pop("approver")
        payload["schema_version"] = 1
        return payload

    upcasters[("release.approved", 0)] = v0_to_v1
    old = {
        "type": "release.approved",
        "schema_version": 0,
        "release_id": RID,
        "version": 2,
        "at": "2025-03-14T09:26:53.589793Z",
        "approver": "bob",
    }
    event = decode(json.dumps(old))
    assert event == SAMPLES[ReleaseApproved]
    assert event.schema_version == 1
    # without the upcaster the old payload is refused, not silently misread
    del upcasters[("release.approved", 0)]
    with pytest.raises(ValidationError):
        decode(old)


def test_upcasters_chain_until_current(upcasters: dict[Any, Any]):
    calls: list[int] = []

    def step(frm: int, fn: Any) -> Any:
        def up(payload: dict[str, Any]) -> dict[str, Any]:
            calls.append(frm)
            payload = fn(dict(payload))
            payload["schema_version"] = frm + 1
            return payload

        return up

    def rename_who(p: dict[str, Any]) -> dict[str, Any]:
        p["who"] = p.pop("user")
        return p

    def rename_by(p: dict[str, Any]) -> dict[str, Any]:
        p["by"] = p.pop("who")
        return p

    upcasters[("release.cancelled", -1)] = step(-1, rename_who)
    upcasters[("release.cancelled", 0)] = step(0, rename_by)
    old = {
        "type": "release.cancelled",
        "schema_version": -1,
        "release_id": RID,
        "version": 3,
        "at": "2025-03-14T09:26:53.589793Z",
        "user": "alice",
        "reason": "wrong ref",
    }
    assert decode(old) == SAMPLES[ReleaseCancelled]
    assert calls == [-1, 0]


def test_upcaster_for_other_type_is_not_applied(upcasters: dict[Any, Any]):
    def boom(payload: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("must not be called")

    upcasters[("release.rejected", 1)] = boom
    assert decode(encode(SAMPLES[ReleaseApproved])) == SAMPLES[ReleaseApproved]


def test_upcasters_are_keyed_by_known_types():
    # every entry here needs a golden file for its old version in tests/contract/golden
    assert all(isinstance(k[0], str) and k[0] in ev.TYPE_NAMES for k in UPCASTERS)
