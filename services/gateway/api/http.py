"""What every API handler shares: reading a JSON body into a model, answering with one, the caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.gateway.auth import principal
from services.gateway.errors import MalformedBody

if TYPE_CHECKING:
    from services.gateway.app import Gateway

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

MAX_BODY = 1024 * 1024
ANONYMOUS = "anonymous"
USER_HEADER = "X-Ferry-User"


def current_user(request: Request, claimed: str | None = None) -> str:
    """Who is calling: the API token's name when auth is on.

    With auth off (a loopback gateway) nobody is checked, so the caller names itself:
    ``claimed`` (a body's ``requested_by``) or the ``X-Ferry-User`` header.
    """
    caller = principal(request)
    if caller is not None:
        return caller.name
    deps = getattr(request.app.state, "gw", None)
    if deps is not None and deps.settings.auth_required:
        return ANONYMOUS  # an open path: never trust a name the caller chose
    user = (claimed or request.headers.get(USER_HEADER, "")).strip()
    return user[:255] if user else ANONYMOUS


def gw(request: Request) -> Gateway:
    """The gateway's dependencies, built in its lifespan."""
    deps: Gateway = request.app.state.gw
    return deps


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The request body as JSON; ``MalformedBody`` (400, field ``body``) when it is not."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise MalformedBody(f"request body is larger than {MAX_BODY} bytes", field="body")
    if not raw.strip():
        if optional:
            return {}
        raise MalformedBody("request body is empty; send a JSON object", field="body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"request body is not valid JSON: {exc}", field="body") from None


async def read_model(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The request body validated by ``model`` (pydantic's ValidationError becomes a 422)."""
    data = await read_json(request, optional=optional)
    if not isinstance(data, dict):
        raise MalformedBody(f"request body must be a JSON object, not {type(data).__name__}", field="body")
    return model.model_validate(data)


def respond(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code, headers=headers)


async def in_session(
    request: Request, fn: Callable[..., R], *args: Any, write: bool = False, **kwargs: Any
) -> R:
    """Run ``fn(session, *args, **kwargs)`` in one transaction on a worker thread (SQL drivers block).

    ``write`` takes SQLite's write lock up front (a read-then-write transaction could not
    upgrade its lock while the projector writes).
    """
    sessions = gw(request).sessions

    def work() -> R:
        session: Session
        with sessions() as session, session.begin():
            if write:
                session.connection(execution_options={"ferry_write": True})
            return fn(session, *args, **kwargs)

    return await asyncio.to_thread(work)
