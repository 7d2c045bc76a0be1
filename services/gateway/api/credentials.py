"""``/api/credentials``: SSH private keys and passwords, stored encrypted and never returned."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from services.gateway.api.credentials_schema import CredentialIn, CredentialList, CredentialOut
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation


def _out(info: repo.CredentialInfo) -> CredentialOut:
    return CredentialOut(name=info.name, kind=info.kind, fingerprint=info.summary, created_at=info.created_at)  # type: ignore[arg-type]


async def create_credential(request: Request) -> Response:
    body = await read_model(request, CredentialIn)
    info = await in_session(
        request, repo.create_credential, gw(request).box, body.name, body.kind, body.secret, write=True
    )
    return respond(_out(info), 201, {"Location": f"/api/credentials/{info.name}"})


async def list_credentials(request: Request) -> Response:
    infos = await in_session(request, repo.list_credentials)
    return respond(CredentialList(credentials=[_out(i) for i in infos]))


async def get_credential(request: Request) -> Response:
    info = await in_session(request, repo.get_credential, request.path_params["name"])
    return respond(_out(info))


async def delete_credential(request: Request) -> Response:
    await in_session(request, repo.delete_credential, request.path_params["name"], write=True)
    return Response(status_code=204)


TAG = "credentials"
OPERATIONS = [
    Operation(
        "POST",
        "/credentials",
        create_credential,
        "Store a credential (encrypted)",
        TAG,
        ok=201,
        response=CredentialOut,
        body=CredentialIn,
        errors=(409, 422),
    ),
    Operation(
        "GET",
        "/credentials",
        list_credentials,
        "List credentials (never their secrets)",
        TAG,
        response=CredentialList,
        errors=(),
    ),
    Operation(
        "GET",
        "/credentials/{name}",
        get_credential,
        "One credential (never its secret)",
        TAG,
        response=CredentialOut,
        errors=(404,),
    ),
    Operation(
        "DELETE",
        "/credentials/{name}",
        delete_credential,
        "Delete an unused credential",
        TAG,
        ok=204,
        errors=(404, 409),
    ),
]
