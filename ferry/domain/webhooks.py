"""Outgoing webhooks, the pure part: which events go to which webhook, the body per kind, signatures.

Kinds: ``generic`` (the event's wire JSON, signed with HMAC-SHA256 in ``X-Ferry-Signature``),
``slack`` and ``mattermost`` (``{"text": …}``), ``dingtalk`` and ``feishu`` (their custom-robot
text messages, signed by their own schemes when a secret is set). No I/O here: the notifier
loads webhooks, renders with these functions and posts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ferry.domain.errors import InvalidInput
from ferry.domain.events import (
    TYPE_NAMES,
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    Event,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseFailed,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseSucceeded,
    SourceFetched,
)
from ferry.domain.release import ReleaseState

KINDS: Final = ("generic", "slack", "mattermost", "dingtalk", "feishu")
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
SIGNATURE_HEADER = "X-Ferry-Signature"
EVENT_HEADER = "X-Ferry-Event"
DELIVERY_HEADER = "X-Ferry-Delivery"
USER_AGENT = "ferry-webhooks/1"
_REASON_LIMIT = 300


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


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    return kind


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


# --- the release an event belongs to ------------------------------------------------------
@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    project: str
    environment: str
    ref: str
    status: str

    @classmethod
    def of(cls, state: ReleaseState) -> ReleaseInfo:
        """The release as ``evolve`` left it right after the event being sent."""
        return cls(state.release_id, state.project, state.environment, state.ref, state.status)

    def as_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "project": self.project,
            "environment": self.environment,
            "ref": self.ref,
            "status": self.status,
        }


# --- text --------------------------------------------------------------------------------
def _short(text: str, limit: int = _REASON_LIMIT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _what(event: Event) -> str:
    match event:
        case ReleaseRequested(requested_by=who):
            return f"requested by {who}"
        case ReleaseApproved(by=who):
            return f"approved by {who}"
        case ReleaseRejected(by=who, reason=reason):
            return f"rejected by {who}" + (f": {_short(reason)}" if reason else "")
        case BuildStarted():
            return "build started"
        case SourceFetched(commit=commit):
            return f"fetched commit {commit[:12]}"
        case BuildHookFinished(index=i, exit_code=code):
            return f"build hook #{i + 1} exited {code}"
        case ArtifactPackaged(size=size, reused=reused):
            return f"artifact {'reused' if reused else 'packaged'} ({_size(size)})"
        case BuildFailed(stage=stage, reason=reason):
            return f"build failed at {stage}: {_short(reason)}"
        case HostStepStarted(host=host, step=step):
            return f"{host}: {step} started"
        case HostStepFinished(host=host, step=step, exit_code=code):
            return f"{host}: {step} {'done' if code == 0 else f'exited {code}'}"
        case HostFailed(host=host, step=step, reason=reason):
            return f"host {host} failed at {step}: {_short(reason)}"
        case HostRolledBack(host=host, to_release=to):
            return f"host {host} rolled back" + (f" to {to}" if to else "")
        case ReleaseSucceeded():
            return "succeeded"
        case ReleaseFailed(reason=reason):
            return f"failed: {_short(reason)}"
        case ReleaseCancelled(by=who, reason=reason):
            return f"cancelled by {who}" + (f": {_short(reason)}" if reason else "")
        case _:
            return event.type


_ICONS = {"succeeded": "✅", "failed": "❌", "cancelled": "⏹", "rejected": "⛔"}


def release_link(public_url: str | None, release_id: str) -> str | None:
    """The portal page of a release, when the portal's public URL is known."""
    return f"{public_url.rstrip('/')}/releases/{release_id}" if public_url else None


def summary(event: Event, release: ReleaseInfo) -> str:
    """A one-line human summary: ``[ferry] shop → prod: release r1 (main) failed: …``."""
    icon = _ICONS.get(release.status, "") if event.TERMINAL or event.type.endswith(".failed") else ""
    prefix = f"{icon} " if icon else ""
    return (
        f"{prefix}[ferry] {release.project} → {release.environment}: "
        f"release {release.id} ({_short(release.ref, 80)}) {_what(event)}"
    )


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- signatures ---------------------------------------------------------------------------
def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body keyed with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: compare the header with the body's signature in constant time."""
    return hmac.compare_digest(signature(secret, body), header)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk custom robot: base64(HMAC-SHA256(key=secret, msg="<timestamp ms>\\n<secret>"))."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu custom bot: base64(HMAC-SHA256(key="<timestamp s>\\n<secret>", msg=b""))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in extra]
    return urlunsplit(parts._replace(query=urlencode([*query, *extra.items()])))


# --- rendering ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outgoing:
    """One HTTP POST to make. ``url`` may carry a signature (DingTalk): never log it."""

    url: str
    body: bytes
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"Outgoing(url=<hidden>, {len(self.body)} bytes)"


def delivery_id(webhook_id: int, seq: int) -> str:
    """The id of one webhook's delivery of one event: the same on every attempt."""
    return f"{webhook_id}-{seq}"


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def render(
    kind: str,
    *,
    webhook_id: int,
    url: str,
    event: Event,
    release: ReleaseInfo,
    seq: int,
    secret: str | None,
    now: datetime,
    public_url: str | None = None,
) -> Outgoing:
    """The request for one event to one webhook of ``kind``; ``now`` dates the chat signatures."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event.type,
        DELIVERY_HEADER: delivery_id(webhook_id, seq),
    }
    link = release_link(public_url, release.id)
    text = summary(event, release)
    if kind == "generic":
        body = _json({"event": event.model_dump(mode="json"), "release": release.as_json(), "seq": seq})
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, body)
        return Outgoing(url, body, headers)
    if kind == "slack":
        line = _slack_escape(text) + (f" <{link}|open in ferry>" if link else "")
        return Outgoing(url, _json({"text": line}), headers)
    if kind == "mattermost":
        line = text + (f" [open in ferry]({link})" if link else "")
        return Outgoing(url, _json({"text": line}), headers)
    plain = text + (f" {link}" if link else "")
    if kind == "dingtalk":
        target = url
        if secret:
            ms = int(now.timestamp() * 1000)
            target = _with_query(url, {"timestamp": str(ms), "sign": dingtalk_sign(secret, ms)})
        return Outgoing(target, _json({"msgtype": "text", "text": {"content": plain}}), headers)
    if kind == "feishu":
        payload: dict[str, Any] = {"msg_type": "text", "content": {"text": plain}}
        if secret:
            s = int(now.timestamp())
            payload = {"timestamp": str(s), "sign": feishu_sign(secret, s), **payload}
        return Outgoing(url, _json(payload), headers)
    raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")


# --- answers and retries ------------------------------------------------------------------------
RETRY_DELAYS: Final = (5.0, 15.0, 30.0, 60.0, 180.0)
"""Seconds before attempts 2..6: six attempts over about five minutes."""


def verdict(kind: str, status_code: int, body: bytes = b"") -> tuple[str, str | None]:
    """``("delivered" | "retry" | "give_up", why)`` for an HTTP answer.

    5xx and 429 are worth another try; any other non-2xx will not change by itself. DingTalk and
    Feishu answer 200 with an error code in the body (a bad signature, a missing keyword).
    """
    if status_code == 429 or status_code >= 500:
        return "retry", f"HTTP {status_code}"
    if not 200 <= status_code < 300:
        return "give_up", f"HTTP {status_code}"
    if kind in ("dingtalk", "feishu"):
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return "delivered", None
        if isinstance(data, dict):
            code = data.get("errcode", data.get("code", data.get("StatusCode", 0)))
            if code not in (0, None, "0"):
                message = data.get("errmsg") or data.get("msg") or data.get("StatusMessage") or ""
                return "give_up", _short(f"{kind} error {code}: {message}", 200)
    return "delivered", None


def retry_delay(attempts: int, delays: Sequence[float] = RETRY_DELAYS) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts, or None when they are used up."""
    if attempts < 1 or attempts > len(delays):
        return None
    return delays[attempts - 1]
