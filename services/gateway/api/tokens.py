"""``/api/tokens``: API tokens for tools, CI and people (admins only).

Creating one answers with the token itself, once; it is stored as its sha256 only, so
nothing can show it again. Revoking deletes it: the next request that presents it gets a 401.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain import auth
from ferry.domain.errors import Conflict
from ferry.domain.vocabulary import Role
from services.gateway.api.http import in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.tokens_schema import TokenCreated, TokenIn, TokenList, TokenOut
from services.gateway.auth import principal


def _out(info: repo.TokenInfo) -> TokenOut:
    role: Role = info.role  # type: ignore[assignment]  # the table's CHECK constraint
    return TokenOut(name=info.name, role=role, created_at=info.created_at, last_used_at=info.last_used_at)


async def create_token(request: Request) -> Response:
    body = await read_model(request, TokenIn)
    token = auth.new_token()
    info = await in_session(
        request, repo.create_token, body.name, body.role, auth.hash_token(token), write=True
    )
    created = TokenCreated(token=token, **_out(info).model_dump())
    return respond(created, 201, {"Location": f"/api/tokens/{info.name}", "Cache-Control": "no-store"})


async def list_tokens(request: Request) -> Response:
    infos = await in_session(request, repo.list_tokens)
    return respond(TokenList(tokens=[_out(i) for i in infos]))


async def get_token(request: Request) -> Response:
    info = await in_session(request, repo.get_token, request.path_params["name"])
    return respond(_out(info))


async def revoke_token(request: Request) -> Response:
    name = request.path_params["name"]
    caller = principal(request)
    if caller is not None and caller.name == name:
        # An admin would lock itself out in the middle of its own session; another admin (or
        # `ferry token revoke` on the server) may revoke it.
        raise Conflict(
            f"{name!r} is the token of this request: revoke it with another admin token", field="name"
        )
    await in_session(request, repo.revoke_token, name, write=True)
    return Response(status_code=204)


TAG = "tokens"
OPERATIONS = [
    Operation(
        "POST",
        "/tokens",
        create_token,
        "Create an API token (admin); the answer shows the token once",
        TAG,
        ok=201,
        response=TokenCreated,
        body=TokenIn,
        errors=(409, 422),
    ),
    Operation("GET", "/tokens", list_tokens, "List API tokens (never the tokens)", TAG, response=TokenList),
    Operation("GET", "/tokens/{name}", get_token, "One API token (never the token)", TAG, response=TokenOut),
    Operation(
        "DELETE",
        "/tokens/{name}",
        revoke_token,
        "Revoke an API token (not the last admin, nor the request's own)",
        TAG,
        ok=204,
        errors=(404, 409),
    ),
]
