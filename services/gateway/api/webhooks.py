"""``/api/webhooks``: outgoing webhooks for chat-ops and other tools; secrets are write-only.

The notifier delivers them (``services/notifier/webhooks.py``); ``GET …/deliveries`` shows
what it did with each event: delivered, retrying, or given up and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain import webhooks
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.schemarules import HTTP_URL_PATTERN, event_patterns, stated
from services.gateway.api.schemas import Input, Name, Output, Patch, Slug, ferry_check

Kind = Literal["generic", "slack", "mattermost", "dingtalk", "feishu"]
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
WebhookSecret = Annotated[str, StringConstraints(min_length=1, max_length=repo.MAX_WEBHOOK_SECRET)]

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
    kind: Kind = "generic"
    secret: WebhookSecret | None = Field(
        default=None, description=_KEY_DOC, json_schema_extra={"writeOnly": True}
    )
    project: Slug | None = Field(default=None, description="only releases of this project (default: all)")
    events: EventPatterns | None = Field(default=None, description=_EVENTS_HELP)
    enabled: bool = True


class WebhookPatch(Patch):
    NULLABLE = frozenset({"secret", "project", "events"})

    url: WebhookUrl | None = None
    kind: Kind | None = None
    secret: WebhookSecret | None = Field(
        default=None, description="write-only; null removes the secret", json_schema_extra={"writeOnly": True}
    )
    project: Slug | None = Field(default=None, description="null: every project")
    events: EventPatterns | None = Field(default=None, description="null: the default events")
    enabled: bool | None = None


class WebhookOut(Output):
    name: str
    url: str
    kind: Kind
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
    status: Literal["retrying", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime


class WebhookDeliveryList(Output):
    deliveries: list[WebhookDeliveryOut]


def _out(info: repo.WebhookInfo) -> WebhookOut:
    return WebhookOut(
        name=info.name,
        url=info.url,
        kind=info.kind,  # type: ignore[arg-type]
        project=info.project,
        events=list(info.events),
        enabled=info.enabled,
        has_secret=info.has_secret,
        created_at=info.created_at,
    )


def _delivery_out(d: repo.WebhookDeliveryInfo) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        seq=d.seq,
        release_id=d.release_id,
        event_type=d.event_type,
        status=d.status,  # type: ignore[arg-type]
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_at=d.next_attempt_at,
        updated_at=d.updated_at,
    )


async def create_webhook(request: Request) -> Response:
    body = await read_model(request, WebhookIn)
    info = await in_session(
        request,
        repo.create_webhook,
        gw(request).box,
        body.name,
        body.url,
        body.kind,
        secret=body.secret,
        project=body.project,
        events=body.events,
        enabled=body.enabled,
        write=True,
    )
    return respond(_out(info), 201, {"Location": f"/api/webhooks/{info.name}"})


async def list_webhooks(request: Request) -> Response:
    return respond(WebhookList(webhooks=[_out(i) for i in await in_session(request, repo.list_webhooks)]))


async def get_webhook(request: Request) -> Response:
    return respond(_out(await in_session(request, repo.get_webhook, request.path_params["name"])))


def _patch(session: Session, box: Any, name: str, patch: WebhookPatch) -> repo.WebhookInfo:
    given = patch.model_fields_set
    changes: dict[str, Any] = {}
    # Absent keeps a value; null clears what can be cleared (secret, project) or restores the
    # default (events). url, kind and enabled have no "cleared" state: null keeps them.
    for key in ("secret", "project", "events"):
        if key in given:
            changes[key] = getattr(patch, key)
    return repo.update_webhook(
        session, box, name, url=patch.url, kind=patch.kind, enabled=patch.enabled, **changes
    )


async def patch_webhook(request: Request) -> Response:
    patch = await read_model(request, WebhookPatch)
    info = await in_session(request, _patch, gw(request).box, request.path_params["name"], patch, write=True)
    return respond(_out(info))


async def delete_webhook(request: Request) -> Response:
    await in_session(request, repo.delete_webhook, request.path_params["name"], write=True)
    return Response(status_code=204)


async def list_deliveries(request: Request) -> Response:
    rows = await in_session(request, repo.list_webhook_deliveries, request.path_params["name"])
    return respond(WebhookDeliveryList(deliveries=[_delivery_out(d) for d in rows]))


TAG = "webhooks"
OPERATIONS = [
    Operation(
        "POST",
        "/webhooks",
        create_webhook,
        "Register an outgoing webhook",
        TAG,
        ok=201,
        response=WebhookOut,
        body=WebhookIn,
        errors=(409, 422),
    ),
    Operation(
        "GET",
        "/webhooks",
        list_webhooks,
        "List webhooks (never their secrets)",
        TAG,
        response=WebhookList,
        errors=(),
    ),
    Operation(
        "GET",
        "/webhooks/{name}",
        get_webhook,
        "One webhook (never its secret)",
        TAG,
        response=WebhookOut,
        errors=(404,),
    ),
    Operation(
        "PATCH",
        "/webhooks/{name}",
        patch_webhook,
        "Change a webhook (null secret removes it)",
        TAG,
        response=WebhookOut,
        body=WebhookPatch,
        errors=(404, 422),
    ),
    Operation("DELETE", "/webhooks/{name}", delete_webhook, "Delete a webhook", TAG, ok=204, errors=(404,)),
    Operation(
        "GET",
        "/webhooks/{name}/deliveries",
        list_deliveries,
        "The webhook's latest deliveries: status, attempts, last error",
        TAG,
        response=WebhookDeliveryList,
        errors=(404,),
    ),
]
