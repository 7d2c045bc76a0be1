"""Stored-history compatibility: hand-written golden JSON for every event type and schema version.

Each ``golden/<type>.v<schema_version>.json`` is an event as ferry once wrote it. Today's
``decode`` must accept every one of them forever. Goldens of the current schema version must
also re-encode to exactly the same JSON, so an accidental change of the wire form (a renamed
field, a new required field, a changed default) fails here. A new event type or schema
version needs a new golden file (and, for a new version, an upcaster for the old one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ferry.domain.events import EVENT_TYPES, UPCASTERS, Event, decode, encode

GOLDEN = Path(__file__).parent / "golden"
_NAME = re.compile(r"^(?P<type>[a-z_]+\.[a-z_]+)\.v(?P<version>\d+)\.json$")


def _current(event_type: type[Event]) -> tuple[str, int]:
    fields = event_type.model_fields
    return fields["type"].default, fields["schema_version"].default


CURRENT: dict[str, int] = dict(_current(t) for t in EVENT_TYPES)
FILES = sorted(GOLDEN.glob("*.json"))


def _key(path: Path) -> tuple[str, int]:
    m = _NAME.match(path.name)
    assert m, f"golden file {path.name} is not named <type>.v<schema_version>.json"
    return m["type"], int(m["version"])


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_golden_directory_is_not_empty():
    assert FILES, f"no golden files in {GOLDEN}"


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_type_has_a_golden_for_its_current_version(event_type: type[Event]):
    type_name, version = _current(event_type)
    path = GOLDEN / f"{type_name}.v{version}.json"
    assert path.exists(), (
        f"{event_type.__name__} ({type_name} v{version}) has no golden file: "
        f"write {path.relative_to(GOLDEN.parent.parent.parent)} by hand"
    )


def test_every_older_version_has_a_golden_and_an_upcaster():
    present = {_key(p) for p in FILES}
    for type_name, current in CURRENT.items():
        for version in range(1, current):
            assert (type_name, version) in present, f"{type_name} v{version}: golden file missing"
            assert (type_name, version) in UPCASTERS, f"{type_name} v{version}: upcaster missing"
    for type_name, version in UPCASTERS:
        assert (type_name, version) in present, f"upcaster {type_name} v{version} has no golden file"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden_names_a_known_type_and_version(path: Path):
    type_name, version = _key(path)
    payload = _load(path)
    assert type_name in CURRENT, f"{path.name}: unknown event type {type_name}"
    assert payload["type"] == type_name
    assert payload.get("schema_version", 1) == version
    assert version <= CURRENT[type_name], f"{path.name}: newer than the code ({CURRENT[type_name]})"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden_decodes(path: Path):
    raw = path.read_bytes()
    event = decode(raw)
    assert event.type == _key(path)[0]
    assert event.schema_version == CURRENT[event.type]
    assert event.at.utcoffset() is not None and event.at.utcoffset().total_seconds() == 0
    # the three input forms agree
    assert decode(raw.decode("utf-8")) == event
    assert decode(_load(path)) == event


@pytest.mark.parametrize(
    "path", [p for p in FILES if CURRENT.get(_key(p)[0]) == _key(p)[1]], ids=lambda p: p.name
)
def test_current_version_golden_reencodes_identically(path: Path):
    golden = _load(path)
    event = decode(path.read_bytes())
    assert json.loads(encode(event)) == golden


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_decoded_golden_is_stable(path: Path):
    event = decode(path.read_bytes())
    assert decode(encode(event)) == event
