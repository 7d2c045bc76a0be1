"""Release events: wire round-trip, immutability, strict validation, upcasting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.domain import events as ev
from ferry.domain.events import (
    EVENT_TYPES,
    HOST_STEPS,
    UPCASTERS,
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    Event,
    HealthCheck,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    Plan,
    Recipe,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseFailed,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseSucceeded,
    SourceFetched,
    UnknownEvent,
    decode,
    encode,
    tail,
    utcnow,
)

AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
RID = "rel_01HQ7Z3K9V"


def _plan() -> Plan:
    return Plan(
        recipe=Recipe(
            repo_url="ssh://git@git.example.com/shop/web.git",
            repo_credential="shop-deploy-key",
            build_hooks=("npm ci", "npm run build"),
            excludes=(".git", "node_modules"),
            deploy_path="/srv/shop",
            shared_files=(".env",),
            shared_dirs=("storage/logs",),
            pre_release="bin/migrate",
            restart="sudo systemctl restart shop",
            health=HealthCheck(kind="http", target="http://127.0.0.1:8000/healthz"),
        ),
        hosts=("web-1", "web-2"),
        concurrency=2,
        max_failures=0,
        require_approval=True,
    )


def _samples() -> dict[type[Event], Event]:
    meta: dict[str, Any] = {"release_id": RID, "at": AT}
    return {
        ReleaseRequested: ReleaseRequested(
            **meta,
            version=1,
            project="shop",
            environment="prod",
            ref="v1.4.2",
            requested_by="alice",
            plan=_plan(),
        ),
        ReleaseApproved: ReleaseApproved(**meta, version=2, by="bob"),
        ReleaseRejected: ReleaseRejected(**meta, version=2, by="bob", reason="freeze week"),
        BuildStarted: BuildStarted(**meta, version=3, builder="builder-1"),
        SourceFetched: SourceFetched(**meta, version=4, commit="9f2c1e" + "0" * 34, duration=1.25),
        BuildHookFinished: BuildHookFinished(
            **meta, version=5, index=0, command="npm ci", exit_code=0, duration=31.5, output_tail="ok\n"
        ),
        ArtifactPackaged: ArtifactPackaged(
            **meta, version=6, digest="sha256:" + "ab" * 32, size=1048576, format="zst", log_digest="x"
        ),
        BuildFailed: BuildFailed(**meta, version=6, stage="hooks", reason="npm ci exited 1"),
        HostStepStarted: HostStepStarted(**meta, version=7, host="web-1", step="upload", agent="agent-a"),
        HostStepFinished: HostStepFinished(
            **meta,
            version=8,
            host="web-1",
            step="activate",
            exit_code=0,
            duration=0.02,
            detail={"previous": "rel_01HQ6", "nested": {"list": [1, 2]}},
        ),
        HostFailed: HostFailed(**meta, version=9, host="web-1", step="health", reason="503 after 5 tries"),
        HostRolledBack: HostRolledBack(**meta, version=10, host="web-1", to_release="rel_01HQ6"),
        ReleaseSucceeded: ReleaseSucceeded(**meta, version=11),
        ReleaseFailed: ReleaseFailed(**meta, version=11, reason="1 of 2 host(s) failed"),
        ReleaseCancelled: ReleaseCancelled(**meta, version=3, by="alice", reason="wrong ref"),
        ev.ReleasePaused: ev.ReleasePaused(
            **meta, version=12, hosts_done=("web-1",), resume_at=AT + timedelta(minutes=10), reason="canary"
        ),
        ev.ReleaseResumed: ev.ReleaseResumed(**meta, version=13, by="timer"),
        ev.ReleaseCancelRequested: ev.ReleaseCancelRequested(**meta, version=13, by="bob", reason="5xx"),
    }


SAMPLES = _samples()


def _ids(t: type[Event]) -> str:
    return t.__name__


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


def _wire(event_type: type[Event]) -> dict[str, Any]:
    return json.loads(encode(SAMPLES[event_type]))


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


# --- helpers --------------------------------------------------------------------


def test_tail_keeps_short_text():
    assert tail("abc", limit=10) == "abc"


def test_tail_cuts_long_text_and_marks_it():
    out = tail("x" * 50 + "END", limit=10)
    assert len(out) == 10
    assert out.startswith("…") and out.endswith("END")


def test_host_steps_order_matches_the_design():
    assert HOST_STEPS == ("upload", "link", "pre_release", "activate", "restart", "health", "post_release")
