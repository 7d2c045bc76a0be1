"""``/api/hosts``: SSH targets, their credential and their pinned host key."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain.errors import Conflict
from services.gateway.api.hosts_schema import HostFields, HostIn, HostList, HostOut, HostPatch
from services.gateway.api.http import in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.errors import validation_body


def _out(info: repo.HostInfo) -> HostOut:
    return HostOut(
        name=info.name,
        address=info.address,
        port=info.port,
        user=info.user,
        credential=info.credential,
        host_key=info.host_key,
        host_key_policy=info.host_key_policy,  # type: ignore[arg-type]
        agent_group=info.agent_group,
        created_at=info.created_at,
    )


async def create_host(request: Request) -> Response:
    body = await read_model(request, HostIn)
    info = await in_session(
        request,
        repo.create_host,
        body.name,
        body.address,
        body.user,
        port=body.port,
        credential=body.credential,
        host_key=body.host_key,
        host_key_policy=body.host_key_policy,
        agent_group=body.agent_group,
        write=True,
    )
    return respond(_out(info), 201, {"Location": f"/api/hosts/{info.name}"})


async def list_hosts(request: Request) -> Response:
    return respond(HostList(hosts=[_out(i) for i in await in_session(request, repo.list_hosts)]))


async def get_host(request: Request) -> Response:
    return respond(_out(await in_session(request, repo.get_host, request.path_params["name"])))


def _patch(session: Session, name: str, patch: HostPatch) -> repo.HostInfo:
    current = repo.get_host(session, name)
    changes = patch.model_dump(exclude_unset=True)
    merged: dict[str, Any] = {
        "address": current.address,
        "port": current.port,
        "user": current.user,
        "credential": current.credential,
        "host_key": current.host_key,
        "host_key_policy": current.host_key_policy,
        "agent_group": current.agent_group,
        **changes,
    }
    # The merged host must be valid as a whole (a pinned host keeps a key): the body is valid on
    # its own, so what fails here conflicts with the host as it is (409).
    try:
        host = HostFields.model_validate(merged, strict=False)
    except ValidationError as exc:
        body = validation_body(exc)["error"]
        raise Conflict(body["message"], field=body["field"]) from None
    return repo.update_host(
        session,
        name,
        address=host.address,
        port=host.port,
        user=host.user,
        credential=host.credential,
        host_key=host.host_key,
        host_key_policy=host.host_key_policy,
        agent_group=host.agent_group,
    )


async def patch_host(request: Request) -> Response:
    patch = await read_model(request, HostPatch)
    info = await in_session(request, _patch, request.path_params["name"], patch, write=True)
    return respond(_out(info))


async def delete_host(request: Request) -> Response:
    await in_session(request, repo.delete_host, request.path_params["name"], write=True)
    return Response(status_code=204)


TAG = "hosts"
OPERATIONS = [
    Operation(
        "POST",
        "/hosts",
        create_host,
        "Register a host",
        TAG,
        ok=201,
        response=HostOut,
        body=HostIn,
        errors=(404, 409, 422),
    ),
    Operation("GET", "/hosts", list_hosts, "List hosts", TAG, response=HostList, errors=()),
    Operation("GET", "/hosts/{name}", get_host, "One host", TAG, response=HostOut, errors=(404,)),
    Operation(
        "PATCH",
        "/hosts/{name}",
        patch_host,
        "Change a host (re-pin its key here)",
        TAG,
        response=HostOut,
        body=HostPatch,
        errors=(404, 409, 422),
    ),
    Operation(
        "DELETE",
        "/hosts/{name}",
        delete_host,
        "Delete a host no environment uses",
        TAG,
        ok=204,
        errors=(404, 409),
    ),
]
