"""The webhook kinds, one module each, and the two things the notifier asks of them: render, judge.

``KINDS`` is ``ferry.domain.vocabulary.WEBHOOK_KINDS``, the one list the API's choices and the
database's CHECK constraint derive from; a kind named there without a module here (or the
reverse) fails at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from ferry.domain.errors import InvalidInput
from ferry.domain.events import Event
from ferry.domain.vocabulary import WEBHOOK_KINDS
from ferry.domain.webhooks import dingtalk, feishu, generic, mattermost, slack
from ferry.domain.webhooks.kind import Kind, Message, Outgoing
from ferry.domain.webhooks.text import ReleaseInfo, release_link, short, summary

_MODULES: Final[dict[str, Kind]] = {
    k.name: k for k in (generic.KIND, slack.KIND, mattermost.KIND, dingtalk.KIND, feishu.KIND)
}
if set(_MODULES) != set(WEBHOOK_KINDS):  # the vocabulary and the modules must name the same kinds
    raise ImportError(f"webhook kinds {sorted(WEBHOOK_KINDS)} but modules for {sorted(_MODULES)}")
REGISTRY: Final[dict[str, Kind]] = {name: _MODULES[name] for name in WEBHOOK_KINDS}
KINDS: Final = WEBHOOK_KINDS
EVENT_HEADER = "X-Ferry-Event"
DELIVERY_HEADER = "X-Ferry-Delivery"
USER_AGENT = "ferry-webhooks/1"
RETRY_DELAYS: Final = (5.0, 15.0, 30.0, 60.0, 180.0)
"""Seconds before attempts 2..6: six attempts over about five minutes."""


def kind_of(name: str) -> Kind:
    """The kind called ``name``; InvalidInput naming the choices otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind") from None


def validate_kind(name: str) -> str:
    return kind_of(name).name


def delivery_id(webhook_id: int, seq: int) -> str:
    """The id of one webhook's delivery of one event: the same on every attempt."""
    return f"{webhook_id}-{seq}"


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
    message = Message(
        url=url,
        event=event,
        release=release,
        seq=seq,
        secret=secret,
        now=now,
        text=summary(event, release),
        link=release_link(public_url, release.id),
        headers=headers,
    )
    return kind_of(kind).render(message)


def verdict(kind: str, status_code: int, body: bytes = b"") -> tuple[str, str | None]:
    """``("delivered" | "retry" | "give_up", why)`` for an HTTP answer.

    5xx and 429 are worth another try; any other non-2xx will not change by itself. A 2xx may
    still be a refusal in the kind's own terms (DingTalk and Feishu answer 200 with an error code).
    """
    if status_code == 429 or status_code >= 500:
        return "retry", f"HTTP {status_code}"
    if not 200 <= status_code < 300:
        return "give_up", f"HTTP {status_code}"
    why = kind_of(kind).refusal(body)
    return ("give_up", short(why, 200)) if why else ("delivered", None)


def retry_delay(attempts: int, delays: Sequence[float] = RETRY_DELAYS) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts, or None when they are used up."""
    if attempts < 1 or attempts > len(delays):
        return None
    return delays[attempts - 1]
