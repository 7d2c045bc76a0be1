"""An event type no fold handles: what a new event type is until every reader knows it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from ferry.domain.events import Event

FAKE_TYPE = "release.teleported"


class ReleaseTeleported(Event):
    type: Literal["release.teleported"] = "release.teleported"
    to: str = "mars"


def fake_event(release_id: str, version: int) -> ReleaseTeleported:
    return ReleaseTeleported(release_id=release_id, version=version, at=datetime(2026, 1, 1, tzinfo=UTC))
