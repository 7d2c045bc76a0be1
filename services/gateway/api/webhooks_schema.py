"""The bodies of ``/api/webhooks``: where events go, which ones, and how deliveries went."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from ferry.db import repo
from ferry.domain import webhooks
from ferry.domain.vocabulary import DeliveryStatus, WebhookKind
from services.gateway.api.bodies import Input, Output, Patch
from services.gateway.api.fields import NON_BLANK, Name, Slug
from services.gateway.api.schemarules import HTTP_URL_PATTERN, event_patterns, ferry_check, stated

WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=webhooks.MAX_URL),
    AfterValidator(ferry_check(webhooks.validate_url)),
    *stated(HTTP_URL_PATTERN, "an http:// or https:// URL"),
]
EventPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(ferry_check(webhooks.validate_pattern)),
    Field(json_schema_extra={"enum": event_patterns()}),
]
EventPatterns = Annotated[list[EventPattern], Field(min_length=1, max_length=webhooks.MAX_PATTERNS)]
WebhookSecret = Annotated[
    str, StringConstraints(min_length=1, max_length=repo.MAX_WEBHOOK_SECRET), *NON_BLANK
]

_EVENTS_HELP = (
    "event wire types ('release.failed') or prefixes ending in a dot ('host.'); default: "
    + ", ".join(webhooks.DEFAULT_EVENTS)
)
_KEY_DOC = (
    "write-only. generic: HMAC-SHA256 key for X-Ferry-Signature; dingtalk/feishu: the robot's signing key"
)


class WebhookIn(Input):
    name: Name
    url: WebhookUrl = Field(description="http:// or https:// URL the events are POSTed to")
    kind: WebhookKind = "generic"
    secret: WebhookSecret | None = Field(
        default=None, description=_KEY_DOC, json_schema_extra={"writeOnly": True}
    )
    project: Slug | None = Field(default=None, description="only releases of this project (default: all)")
    events: EventPatterns | None = Field(default=None, description=_EVENTS_HELP)
    enabled: bool = True


class WebhookPatch(Patch):
    NULLABLE = frozenset({"secret", "project", "events"})

    url: WebhookUrl | None = None
    kind: WebhookKind | None = None
    secret: WebhookSecret | None = Field(
        default=None, description="write-only; null removes the secret", json_schema_extra={"writeOnly": True}
    )
    project: Slug | None = Field(default=None, description="null: every project")
    events: EventPatterns | None = Field(default=None, description="null: the default events")
    enabled: bool | None = None


class WebhookOut(Output):
    name: str
    url: str
    kind: WebhookKind
    project: str | None
    events: list[str]
    enabled: bool
    has_secret: bool = Field(description="whether a secret is set (the secret itself is never returned)")
    created_at: datetime


class WebhookList(Output):
    webhooks: list[WebhookOut]


class WebhookDeliveryOut(Output):
    seq: int = Field(description="stream sequence of the event")
    release_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime


class WebhookDeliveryList(Output):
    deliveries: list[WebhookDeliveryOut]
