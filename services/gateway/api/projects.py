"""``/api/projects``: repositories, how to build them and how to install them; and their git refs."""

from __future__ import annotations

import json
from typing import Any

import nats.errors
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain.errors import FerryError
from ferry.infra import subjects
from services.gateway.api.fields import NAME_PATTERN
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.projects_schema import (
    ProjectFields,
    ProjectIn,
    ProjectList,
    ProjectOut,
    ProjectPatch,
    RefsOut,
)
from services.gateway.errors import ERROR_TABLE, GatewayTimeout, ServiceUnavailable, UpstreamError

REFS_SUBJECT = subjects.BUILDER_REFS
REFS_TIMEOUT = 60.0
_OWN = ("name", "repo_url", "repo_credential")


def _config(fields: ProjectFields) -> dict[str, Any]:
    return fields.model_dump(mode="json", exclude=set(_OWN))


def _out(session: Session, info: repo.ProjectInfo) -> ProjectOut:
    envs = [e.name for e in repo.list_environments(session, info.name)]
    return ProjectOut.model_validate(
        {
            **info.recipe().model_dump(mode="json"),
            "name": info.name,
            "environments": envs,
            "created_at": info.created_at,
        }
    )


def _create(session: Session, body: ProjectIn) -> ProjectOut:
    info = repo.create_project(
        session, body.name, body.repo_url, _config(body), repo_credential=body.repo_credential
    )
    return _out(session, info)


async def create_project(request: Request) -> Response:
    body = await read_model(request, ProjectIn)
    out = await in_session(request, _create, body, write=True)
    return respond(out, 201, {"Location": f"/api/projects/{out.name}"})


def _list(session: Session) -> ProjectList:
    return ProjectList(projects=[_out(session, p) for p in repo.list_projects(session)])


async def list_projects(request: Request) -> Response:
    return respond(await in_session(request, _list))


def _get(session: Session, name: str) -> ProjectOut:
    return _out(session, repo.get_project(session, name))


async def get_project(request: Request) -> Response:
    return respond(await in_session(request, _get, request.path_params["name"]))


def _patch(session: Session, name: str, patch: ProjectPatch) -> ProjectOut:
    current = repo.get_project(session, name)
    merged = {
        **current.recipe().model_dump(mode="json"),
        **patch.model_dump(mode="json", exclude_unset=True),
    }
    fields = ProjectFields.model_validate(merged, strict=False)
    info = repo.update_project(
        session,
        name,
        repo_url=fields.repo_url,
        repo_credential=fields.repo_credential,
        config=_config(fields),
    )
    return _out(session, info)


async def patch_project(request: Request) -> Response:
    patch = await read_model(request, ProjectPatch)
    return respond(await in_session(request, _patch, request.path_params["name"], patch, write=True))


async def delete_project(request: Request) -> Response:
    await in_session(request, repo.delete_project, request.path_params["name"], write=True)
    return Response(status_code=204)


def _builder_error(code: str, message: str) -> FerryError:
    """The builder's error code as the ferry error the table maps (unknown codes: 502)."""
    for cls in ERROR_TABLE:
        if isinstance(cls, type) and issubclass(cls, FerryError) and cls.code == code:
            return cls(message, field="repo_url" if code.startswith(("REPOSITORY", "INVALID")) else None)
    return UpstreamError(message)


async def project_refs(request: Request) -> Response:
    name = request.path_params["name"]
    project = await in_session(request, repo.get_project, name)
    payload = json.dumps({"repo_url": project.repo_url, "credential": project.repo_credential}).encode()
    try:
        msg = await gw(request).bus.nc.request(REFS_SUBJECT, payload, timeout=REFS_TIMEOUT)
    except nats.errors.NoRespondersError:
        raise ServiceUnavailable("no builder is running to list the repository's refs; start one") from None
    except nats.errors.TimeoutError:
        raise GatewayTimeout(f"the builder did not list the refs within {REFS_TIMEOUT:.0f}s") from None
    try:
        reply = json.loads(msg.data)
    except ValueError:
        raise UpstreamError("the builder sent an unreadable reply") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        reply = reply if isinstance(reply, dict) else {}
        raise _builder_error(str(reply.get("code", "")), str(reply.get("error", "the builder failed")))
    return respond(
        RefsOut.model_validate(
            {"project": name, "branches": reply.get("branches", []), "tags": reply.get("tags", [])}
        )
    )


TAG = "projects"
_NAME = {"name": NAME_PATTERN}
OPERATIONS = [
    Operation(
        "POST",
        "/projects",
        create_project,
        "Register a project",
        TAG,
        ok=201,
        response=ProjectOut,
        body=ProjectIn,
        errors=(404, 409, 422),
    ),
    Operation("GET", "/projects", list_projects, "List projects", TAG, response=ProjectList, errors=()),
    Operation("GET", "/projects/{name}", get_project, "One project", TAG, response=ProjectOut, errors=(404,)),
    Operation(
        "PATCH",
        "/projects/{name}",
        patch_project,
        "Change a project",
        TAG,
        response=ProjectOut,
        body=ProjectPatch,
        errors=(404, 422),
    ),
    Operation(
        "DELETE",
        "/projects/{name}",
        delete_project,
        "Delete a project and its environments",
        TAG,
        ok=204,
        errors=(404,),
    ),
    Operation(
        "GET",
        "/projects/{name}/refs",
        project_refs,
        "Branches and tags, from the builder's mirror",
        TAG,
        response=RefsOut,
        errors=(404, 502, 503, 504),
    ),
]
