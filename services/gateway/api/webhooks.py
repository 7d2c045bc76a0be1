"""``/api/webhooks``: outgoing webhooks for chat-ops and other tools; secrets are write-only.

The notifier delivers them (``services/notifier/webhooks.py``); ``GET …/deliveries`` shows
what it did with each event: delivered, retrying, or given up and why.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.webhooks_schema import (
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)


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
        errors=(404, 409, 422),
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
