"""The REST API, mounted by the gateway under ``/api``: one module per resource.

Each module lists its ``Operation``s; they make both the routes and the OpenAPI document
(``GET /api/openapi.json``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferry.domain import auth
from services.gateway.api import (
    credentials,
    environments,
    fleet,
    gc,
    hosts,
    locks,
    projects,
    releases,
    rerun,
    tokens,
    variables,
    webhooks,
)
from services.gateway.api.openapi import REF, Operation, document, routes_for

RESOURCE_OPERATIONS: list[Operation] = [
    *credentials.OPERATIONS,
    *hosts.OPERATIONS,
    *projects.OPERATIONS,
    *environments.OPERATIONS,
    *locks.OPERATIONS,
    *fleet.OPERATIONS,
    *releases.OPERATIONS,
    *rerun.OPERATIONS,
    *webhooks.OPERATIONS,
    *tokens.OPERATIONS,
    *variables.OPERATIONS,
    *gc.OPERATIONS,
]


def operations() -> list[Operation]:
    """Every operation of the API, the document's own included."""
    return [*RESOURCE_OPERATIONS, OPENAPI]


def secured(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer-token scheme, and each operation's least role and 401/403 answers."""
    doc["components"]["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API token (ferry token create, or POST /api/tokens); required unless "
            "the gateway runs with FERRY_AUTH=off (the default on a loopback address)",
        }
    }
    doc["security"] = [{"bearerAuth": []}]
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for param in op["parameters"]:
                if param["name"] == "X-Ferry-User":
                    param["description"] = "who is calling, with FERRY_AUTH=off only (else the token's name)"
            role = auth.required_role(method.upper(), path.removeprefix("/api"))
            if role is None:
                op["security"] = []
                continue
            op["x-ferry-role"] = role
            op["responses"]["401"] = {"description": "no valid API token", **error}
            op["responses"]["403"] = {"description": f"needs the {role} role", **error}
    return doc


def api_document(auth_required: bool) -> dict[str, Any]:
    """The OpenAPI document as this gateway serves it: with the bearer scheme when auth is on."""
    key = "secured" if auth_required else "open"
    if key not in _cache:
        doc = document(operations())
        _cache[key] = secured(doc) if auth_required else doc
    served: dict[str, Any] = _cache[key]
    return served


async def openapi(request: Request) -> Response:
    gw = getattr(request.app.state, "gw", None)
    return JSONResponse(api_document(bool(gw is None or gw.settings.auth_required)))


_cache: dict[str, Any] = {}
OPENAPI = Operation("GET", "/openapi.json", openapi, "This document", "meta", errors=(), store=False)
routes: list[Route] = routes_for(operations())

__all__ = ["operations", "routes"]
