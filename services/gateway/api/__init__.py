"""The REST API, mounted by the gateway under ``/api``: one module per resource.

Each module lists its ``Operation``s; they make both the routes and the OpenAPI document
(``GET /api/openapi.json``).
"""

from __future__ import annotations

from starlette.routing import Route

from services.gateway.api import credentials, environments, hosts, projects, releases, webhooks
from services.gateway.api.openapi import Operation, openapi_operation, routes_for

RESOURCE_OPERATIONS: list[Operation] = [
    *credentials.OPERATIONS,
    *hosts.OPERATIONS,
    *projects.OPERATIONS,
    *environments.OPERATIONS,
    *releases.OPERATIONS,
    *webhooks.OPERATIONS,
]


def operations() -> list[Operation]:
    """Every operation of the API, the document's own included."""
    return [*RESOURCE_OPERATIONS, OPENAPI]


OPENAPI = openapi_operation(operations)
routes: list[Route] = routes_for(operations())

__all__ = ["operations", "routes"]
