"""The API's operations and the OpenAPI 3.1 document generated from them.

Each resource module lists its ``Operation``s; the same list builds the Starlette routes and
the document, and the component schemas come from the pydantic models that validate requests,
so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway.api.bodies import ErrorResponse, Input
from services.gateway.api.text import TEXT_PATTERN, documented

Endpoint = Callable[[Request], Awaitable[Response]]
REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")
_ERRORS = {
    400: "the body is not JSON (or Content-Length is not a number)",
    403: "refused: a page elsewhere (Origin), or a rule such as four-eyes approval",
    404: "not found",
    409: "conflicts with the current state",
    413: "the body is larger than FERRY_MAX_BODY",
    415: "the body is not Content-Type: application/json",
    421: "the Host header names another server (FERRY_ALLOWED_HOSTS)",
    422: "invalid input; the error names the field",
    502: "a service the request needs (the builder, a git remote) answered with an error",
    503: "a backing service is unavailable (NATS, the database, or no builder or agent is running)",
    504: "a service the request needs did not answer in time",
}
GUARD_ERRORS = (400, 413, 421)
"""What the gateway's guard may answer to any request (services/gateway/guard.py): a foreign
Host, a Content-Length that is not a number or above FERRY_MAX_BODY."""
UNSAFE_ERRORS = (403, 413, 415)
"""What the guard may answer to any state-changing request: a foreign Origin, a body not JSON."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    """Relative to the ``/api`` mount, in Starlette's syntax (``/hosts/{name}``)."""
    endpoint: Endpoint
    summary: str
    tag: str
    ok: int = 200
    response: type[BaseModel] | str | None = None
    """A model, a media type for a non-JSON body (``text/plain``), or None for an empty body."""
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = (404, 422)
    path_params: dict[str, str] = field(default_factory=dict)
    """Pattern per path parameter, where one applies."""
    store: bool = True
    """Reads or writes the database or NATS: a 503 names which one is away."""


def _dispatch(table: dict[str, Endpoint]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        method = request.method.upper()
        return await table["GET" if method == "HEAD" else method](request)

    return endpoint


def routes_for(operations: Sequence[Operation]) -> list[Route]:
    """One route per path, dispatching on the method: a 405 then lists (``Allow``) every method
    the path has, not only one operation's."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for op in operations:
        by_path.setdefault(op.path, {})[op.method.upper()] = op.endpoint
    return [
        Route(path, _dispatch(table), methods=sorted(table), name=f"{' '.join(sorted(table)).lower()} {path}")
        for path, table in by_path.items()
    ]


def _models(operations: Sequence[Operation]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ErrorResponse: None}
    for op in operations:
        for m in (op.body, op.response, op.query):
            if isinstance(m, type) and issubclass(m, BaseModel):
                seen[m] = None
    return list(seen)


def _input_names() -> set[str]:
    found, todo = set(), [Input]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def operation_id(op: Operation) -> str:
    return f"{op.method.lower()}_{op.endpoint.__name__}"


def _links(made: Operation, operations: Sequence[Operation]) -> dict[str, Any]:
    """OpenAPI links from an operation that creates something to the operations on what it made.

    ``POST /hosts`` answers a host whose ``name`` is the ``{name}`` of ``/hosts/{name}``…; the
    parameters ``made`` has in its own path are passed on as they were.
    """
    model = made.response
    if made.method != "POST" or made.ok not in (201, 202) or not isinstance(model, type):
        return {}
    key = next((k for k in ("name", "id") if k in model.model_fields), None)
    if key is None:
        return {}
    own = _PATH_PARAM.findall(made.path)
    links: dict[str, Any] = {}
    for other in operations:
        rest = other.path.removeprefix(made.path + "/")
        new = [p for p in _PATH_PARAM.findall(other.path) if p not in own]
        if rest == other.path or len(new) != 1 or not rest.startswith("{" + new[0] + "}"):
            continue
        parameters = {p: f"$request.path.{p}" for p in own} | {new[0]: f"$response.body#/{key}"}
        links[operation_id(other)] = {"operationId": operation_id(other), "parameters": parameters}
    return links


def document(
    operations: Sequence[Operation], *, prefix: str = "/api", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations`` with component schemas from their models."""
    models = _models(operations)
    inputs = {op.body for op in operations if op.body is not None}
    _, defs = models_json_schema(
        [(m, "validation" if m in inputs else "serialization") for m in models], ref_template=REF
    )
    schemas = defs.get("$defs", {})
    for name in _input_names():
        if name in schemas:
            documented(schemas[name])
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item: dict[str, Any] = {
            "operationId": operation_id(op),
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": [],
            "responses": {},
        }
        for name in _PATH_PARAM.findall(op.path):
            schema: dict[str, Any] = {"type": "string"}
            if name in op.path_params:
                schema["pattern"] = op.path_params[name]
            item["parameters"].append({"name": name, "in": "path", "required": True, "schema": schema})
        if op.query is not None:
            for name, prop in op.query.model_json_schema(ref_template=REF)["properties"].items():
                item["parameters"].append({"name": name, "in": "query", "required": False, "schema": prop})
        item["parameters"].append(
            {
                "name": "X-Ferry-User",
                "in": "header",
                "required": False,
                "description": "who is calling (until API tokens land)",
                "schema": {"type": "string", "pattern": TEXT_PATTERN},
            }
        )
        if op.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": _ref(op.body)}},
            }
        if op.response is None:
            item["responses"][str(op.ok)] = {"description": "done"}
        elif isinstance(op.response, str):
            item["responses"][str(op.ok)] = {
                "description": "ok",
                "content": {op.response: {"schema": {"type": "string"}}},
            }
        else:
            item["responses"][str(op.ok)] = {
                "description": "ok",
                "content": {"application/json": {"schema": _ref(op.response)}},
            }
            links = _links(op, operations)
            if links:
                item["responses"][str(op.ok)]["links"] = links
        codes = set(op.errors) | set(GUARD_ERRORS) | ({400, 422} if op.body is not None else set())
        if op.method.upper() not in ("GET", "HEAD", "OPTIONS"):
            codes |= set(UNSAFE_ERRORS)
        if op.store:
            codes.add(503)
        for code in sorted(codes):
            item["responses"][str(code)] = {
                "description": _ERRORS.get(code, "error"),
                "content": {"application/json": {"schema": _ref(ErrorResponse)}},
            }
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ferry",
            "version": version,
            "description": "Releases from git to SSH hosts, event-sourced. Errors are "
            '{"error": {"code", "message", "field"}}.',
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
