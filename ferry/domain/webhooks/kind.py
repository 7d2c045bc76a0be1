"""What every webhook kind is: a name, a way to render one event as an HTTP POST, a way to read the answer.

A kind is one module in this package (``generic``, ``slack``, …) holding one object that meets
``Kind``; ``registry.REGISTRY`` maps the names of ``ferry.domain.vocabulary.WEBHOOK_KINDS`` to
them. Adding a kind is a module here, its name there, and a migration widening the CHECK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ferry.domain.events import Event
from ferry.domain.webhooks.text import ReleaseInfo


@dataclass(frozen=True)
class Outgoing:
    """One HTTP POST to make. ``url`` may carry a signature (DingTalk): never log it."""

    url: str
    body: bytes
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"Outgoing(url=<hidden>, {len(self.body)} bytes)"


@dataclass(frozen=True)
class Message:
    """Everything a kind may put in its request for one event to one webhook."""

    url: str
    event: Event
    release: ReleaseInfo
    seq: int
    secret: str | None
    now: datetime
    text: str
    """The one-line summary (``text.summary``), unescaped."""
    link: str | None
    """The release's portal page, when the portal's public URL is known."""
    headers: dict[str, str]
    """The headers every kind sends (content type, user agent, event type, delivery id)."""


class Kind(Protocol):
    name: str

    def render(self, message: Message) -> Outgoing:
        """The request for ``message``."""
        ...

    def refusal(self, body: bytes) -> str | None:
        """Why a 2xx answer is still a refusal (chat robots answer 200 with an error code), or None."""
        ...


def as_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def with_query(url: str, extra: dict[str, str]) -> str:
    """``url`` with ``extra`` query parameters, replacing any of the same name."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in extra]
    return urlunsplit(parts._replace(query=urlencode([*query, *extra.items()])))


def error_code_refusal(kind: str, body: bytes) -> str | None:
    """The chat robots' convention: a JSON body whose ``errcode``/``code``/``StatusCode`` is not 0."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    code = data.get("errcode", data.get("code", data.get("StatusCode", 0)))
    if code in (0, None, "0"):
        return None
    message = data.get("errmsg") or data.get("msg") or data.get("StatusMessage") or ""
    return f"{kind} error {code}: {message}"
