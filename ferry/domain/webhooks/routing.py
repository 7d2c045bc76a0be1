"""Which events go to which webhook: the webhook's own fields, validated, and the routing rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from ferry.domain.errors import InvalidInput
from ferry.domain.events import TYPE_NAMES

DEFAULT_EVENTS: Final = (
    "release.requested",
    "release.succeeded",
    "release.failed",
    "release.cancelled",
    "host.failed",
    "build.failed",
)
MAX_URL = 2000
MAX_PATTERNS = 50


# --- validation ---------------------------------------------------------------------
def validate_url(url: str) -> str:
    """An absolute http:// or https:// URL with a host (no credentials in it, no whitespace)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidInput(f"url must be an http(s) URL of at most {MAX_URL} characters", field="url")
    if any(c.isspace() for c in url):
        raise InvalidInput("url must not contain whitespace", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a malformed port
    except ValueError:
        raise InvalidInput("url is not a well-formed URL", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidInput("url must name a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry user:password (use the secret)", field="url")
    if port == 0:
        raise InvalidInput("url has an invalid port", field="url")
    return url


def validate_pattern(pattern: str) -> str:
    """An event wire type (``release.failed``) or a prefix ending in a dot (``release.``)."""
    if not isinstance(pattern, str):
        raise InvalidInput("each event must be a string", field="events")
    if pattern.endswith("."):
        if not any(t.startswith(pattern) for t in TYPE_NAMES):
            raise InvalidInput(f"no event type starts with {pattern!r}", field="events")
        return pattern
    if pattern not in TYPE_NAMES:
        raise InvalidInput(
            f"unknown event type {pattern!r}; use a type ('release.failed') or a prefix ('host.')",
            field="events",
        )
    return pattern


def validate_events(patterns: Iterable[str] | None) -> tuple[str, ...]:
    """The event filter, validated and de-duplicated in order; None means the defaults."""
    if patterns is None:
        return DEFAULT_EVENTS
    if isinstance(patterns, str):
        raise InvalidInput("events must be a list of event types or prefixes", field="events")
    out = tuple(dict.fromkeys(validate_pattern(p) for p in patterns))
    if not out or len(out) > MAX_PATTERNS:
        raise InvalidInput(f"events must list 1 to {MAX_PATTERNS} types or prefixes", field="events")
    return out


# --- routing --------------------------------------------------------------------------
def event_matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether ``event_type`` is one of ``patterns`` or starts with one of its prefixes."""
    return any(event_type == p or (p.endswith(".") and event_type.startswith(p)) for p in patterns)


@dataclass(frozen=True)
class Route:
    """What routing needs to know of a webhook (no URL, no secret)."""

    id: int
    project: str | None
    events: tuple[str, ...]
    enabled: bool = True
    since: datetime | None = None
    """Events before this time (the webhook's creation) are not sent: a new webhook never replays
    history, even when the stream is read from its start (a new deliverer on an old stream)."""


def _takes(route: Route, event_type: str, at: datetime | None) -> bool:
    if not route.enabled or not event_matches(route.events, event_type):
        return False
    return route.since is None or at is None or at >= route.since


def wants(route: Route, event_type: str, project: str | None, at: datetime | None = None) -> bool:
    """Whether the webhook takes this event (of time ``at``) of a release of ``project``."""
    return _takes(route, event_type, at) and (route.project is None or route.project == project)


def interested(routes: Iterable[Route], event_type: str, at: datetime | None = None) -> list[Route]:
    """The routes that might take ``event_type``, before the release's project is known."""
    return [r for r in routes if _takes(r, event_type, at)]
