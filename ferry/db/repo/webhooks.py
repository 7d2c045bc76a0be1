"""Outgoing webhooks: targets, routes and the delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.models import (
    Webhook,
    WebhookDelivery,
)
from ferry.domain import webhooks
from ferry.domain.errors import NotFound
from ferry.domain.events import utcnow
from ferry.infra.secrets import SecretBox

from ._common import KEEP, _choice, _int_range, _Keep, _name, _text, _write
from .projects import _project

MAX_WEBHOOK_SECRET = 1024


@dataclass(frozen=True)
class WebhookInfo:
    """A webhook as the API shows it: whether it has a secret, never the secret."""

    id: int
    name: str
    url: str
    kind: str
    project: str | None
    events: tuple[str, ...]
    enabled: bool
    has_secret: bool
    created_at: datetime


@dataclass(frozen=True)
class WebhookTarget:
    """What the deliverer needs to post: for the notifier only, never for responses or logs."""

    id: int
    name: str
    url: str
    kind: str
    secret: str | None
    enabled: bool

    def __repr__(self) -> str:
        return f"WebhookTarget(id={self.id!r}, name={self.name!r}, kind={self.kind!r}, url=<hidden>)"


@dataclass(frozen=True)
class WebhookDeliveryInfo:
    webhook_id: int
    seq: int
    release_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime


def _webhook_info(w: Webhook) -> WebhookInfo:
    return WebhookInfo(
        w.id, w.name, w.url, w.kind, w.project, tuple(w.events), w.enabled, w.secret is not None, w.created_at
    )


def _delivery_info(d: WebhookDelivery) -> WebhookDeliveryInfo:
    return WebhookDeliveryInfo(
        d.webhook_id,
        d.seq,
        d.release_id,
        d.event_type,
        d.status,
        d.attempts,
        d.last_status_code,
        d.last_error,
        d.next_attempt_at,
        d.updated_at,
    )


def _webhook(session: Session, name: str, field: str = "name") -> Webhook:
    w = session.scalar(select(Webhook).where(Webhook.name == name))
    if w is None:
        raise NotFound(f"no webhook named {name!r}", field=field)
    return w


def _webhook_secret(box: SecretBox, secret: str | None) -> bytes | None:
    if secret is None:
        return None
    return box.encrypt(_text(secret, "secret", MAX_WEBHOOK_SECRET))


def create_webhook(
    session: Session,
    box: SecretBox,
    name: str,
    url: str,
    kind: str,
    *,
    secret: str | None = None,
    project: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool = True,
) -> WebhookInfo:
    """A webhook; ``events`` lists wire types or prefixes (``release.``), None for the defaults."""
    w = Webhook(
        name=_name(name),
        url=webhooks.validate_url(url),
        kind=webhooks.validate_kind(kind),
        secret=_webhook_secret(box, secret),
        project=_project(session, project, field="project").name if project is not None else None,
        events=list(webhooks.validate_events(events)),
        enabled=bool(enabled),
    )
    with _write(session, exists=f"a webhook named {name!r} already exists"):
        session.add(w)
    return _webhook_info(w)


def get_webhook(session: Session, name: str) -> WebhookInfo:
    return _webhook_info(_webhook(session, name))


def list_webhooks(session: Session) -> list[WebhookInfo]:
    return [_webhook_info(w) for w in session.scalars(select(Webhook).order_by(Webhook.name))]


def update_webhook(
    session: Session,
    box: SecretBox,
    name: str,
    *,
    url: str | None = None,
    kind: str | None = None,
    secret: str | None | _Keep = KEEP,
    project: str | None | _Keep = KEEP,
    events: Sequence[str] | None | _Keep = KEEP,
    enabled: bool | None = None,
) -> WebhookInfo:
    """Change a webhook; ``secret``/``project`` None clear them, ``events=None`` means the defaults."""
    w = _webhook(session, name)
    with _write(session, exists=""):
        if url is not None:
            w.url = webhooks.validate_url(url)
        if kind is not None:
            w.kind = webhooks.validate_kind(kind)
        if secret is not KEEP:
            w.secret = _webhook_secret(box, secret)
        if project is not KEEP:
            w.project = _project(session, project, field="project").name if project is not None else None
        if events is not KEEP:
            w.events = list(webhooks.validate_events(events))
        if enabled is not None:
            w.enabled = bool(enabled)
    return _webhook_info(w)


def delete_webhook(session: Session, name: str) -> None:
    """Delete a webhook and its delivery records."""
    w = _webhook(session, name)
    with _write(session, exists="", in_use=f"webhook {name!r} is in use"):
        session.delete(w)


def webhook_routes(session: Session) -> list[webhooks.Route]:
    """Every enabled webhook's filter, for routing events (no URLs, no secrets)."""
    columns = (Webhook.id, Webhook.project, Webhook.events, Webhook.created_at)
    rows = session.execute(select(*columns).where(Webhook.enabled.is_(True))).all()
    return [webhooks.Route(i, project, tuple(events), since=created) for i, project, events, created in rows]


def webhook_target(session: Session, box: SecretBox, webhook_id: int) -> WebhookTarget | None:
    """The webhook with its decrypted secret, or None when it was deleted."""
    w = session.get(Webhook, webhook_id)
    if w is None:
        return None
    secret = box.decrypt(w.secret) if w.secret is not None else None
    return WebhookTarget(w.id, w.name, w.url, w.kind, secret, w.enabled)


def get_webhook_delivery(session: Session, webhook_id: int, seq: int) -> WebhookDeliveryInfo | None:
    d = session.get(WebhookDelivery, (webhook_id, seq))
    return _delivery_info(d) if d is not None else None


def record_webhook_attempt(
    session: Session,
    webhook_id: int,
    seq: int,
    *,
    release_id: str,
    event_type: str,
    status: str,
    status_code: int | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> WebhookDeliveryInfo:
    """Count one more attempt of a delivery and its outcome (``retrying``, ``delivered``, ``failed``)."""
    _choice(status, ("retrying", "delivered", "failed"), "status")
    d = session.get(WebhookDelivery, (webhook_id, seq))
    with _write(session, exists=f"delivery {webhook_id}-{seq} was recorded concurrently", field="seq"):
        if d is None:
            d = WebhookDelivery(
                webhook_id=webhook_id, seq=seq, release_id=release_id, event_type=event_type, attempts=0
            )
            session.add(d)
        d.attempts = (d.attempts or 0) + 1
        d.status = status
        d.last_status_code = status_code
        d.last_error = error[:2000] if error else None
        d.next_attempt_at = next_attempt_at
        d.updated_at = utcnow()
    return _delivery_info(d)


def list_webhook_deliveries(session: Session, name: str, limit: int = 50) -> list[WebhookDeliveryInfo]:
    """A webhook's deliveries, newest event first."""
    _int_range(limit, "limit", 1, 1000)
    w = _webhook(session, name)
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == w.id)
        .order_by(WebhookDelivery.seq.desc())
        .limit(limit)
    )
    return [_delivery_info(d) for d in session.scalars(query)]
