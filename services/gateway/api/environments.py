"""``/api/projects/{project}/environments``: ordered host lists, rollout strategies and limits."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.infra.envlock import EnvLock
from services.gateway.api.environments_schema import (
    EnvironmentIn,
    EnvironmentList,
    EnvironmentOut,
    EnvironmentPatch,
)
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation


def _out(info: repo.EnvironmentInfo, lock: EnvLock | None = None) -> EnvironmentOut:
    return EnvironmentOut(
        active_release=lock.holder if lock else None,
        queue=lock.waiting if lock else [],
        project=info.project,
        name=info.name,
        hosts=list(info.hosts),
        concurrency=info.concurrency,
        max_failures=info.max_failures,
        require_approval=info.require_approval,
        allow_self_approval=info.allow_self_approval,
        rollback_on_failure=info.rollback_on_failure,
        strategy=info.strategy,  # type: ignore[arg-type]  # the repo stores only valid strategies
        batch_size=info.batch_size,
        canary_size=info.canary_size,
        canary_pause=info.canary_pause,
        on_busy=info.on_busy,  # type: ignore[arg-type]  # the repo stores only ON_BUSY values
    )


async def create_environment(request: Request) -> Response:
    project = request.path_params["project"]
    body = await read_model(request, EnvironmentIn)
    info = await in_session(
        request,
        repo.create_environment,
        project,
        body.name,
        hosts=body.hosts,
        concurrency=body.concurrency,
        max_failures=body.max_failures,
        require_approval=body.require_approval,
        allow_self_approval=body.allow_self_approval,
        rollback_on_failure=body.rollback_on_failure,
        strategy=body.strategy,
        batch_size=body.batch_size,
        canary_size=body.canary_size,
        canary_pause=body.canary_pause,
        on_busy=body.on_busy,
        write=True,
    )
    return respond(_out(info), 201, {"Location": f"/api/projects/{project}/environments/{info.name}"})


async def list_environments(request: Request) -> Response:
    infos = await in_session(request, repo.list_environments, request.path_params["project"])
    return respond(EnvironmentList(environments=[_out(i) for i in infos]))


async def get_environment(request: Request) -> Response:
    p = request.path_params
    info = await in_session(request, repo.get_environment, p["project"], p["env"])
    return respond(_out(info, await gw(request).bus.locks.get(p["project"], p["env"])))


def _patch(session: Session, project: str, name: str, patch: EnvironmentPatch) -> repo.EnvironmentInfo:
    return repo.update_environment(session, project, name, **patch.model_dump(exclude_unset=True))


async def patch_environment(request: Request) -> Response:
    p = request.path_params
    patch = await read_model(request, EnvironmentPatch)
    return respond(_out(await in_session(request, _patch, p["project"], p["env"], patch, write=True)))


async def delete_environment(request: Request) -> Response:
    p = request.path_params
    await in_session(request, repo.delete_environment, p["project"], p["env"], write=True)
    return Response(status_code=204)


TAG = "environments"
BASE = "/projects/{project}/environments"
OPERATIONS = [
    Operation(
        "POST",
        BASE,
        create_environment,
        "Add an environment to a project",
        TAG,
        ok=201,
        response=EnvironmentOut,
        body=EnvironmentIn,
        errors=(404, 409, 422),
    ),
    Operation(
        "GET",
        BASE,
        list_environments,
        "A project's environments",
        TAG,
        response=EnvironmentList,
        errors=(404,),
    ),
    Operation(
        "GET",
        BASE + "/{env}",
        get_environment,
        "One environment",
        TAG,
        response=EnvironmentOut,
        errors=(404,),
    ),
    Operation(
        "PATCH",
        BASE + "/{env}",
        patch_environment,
        "Change an environment (hosts replace the list)",
        TAG,
        response=EnvironmentOut,
        body=EnvironmentPatch,
        errors=(404, 422),
    ),
    Operation(
        "DELETE", BASE + "/{env}", delete_environment, "Delete an environment", TAG, ok=204, errors=(404,)
    ),
]
