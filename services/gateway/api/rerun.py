"""Releasing a release's artifact again: a rollback to it (every host of its environment), or a
retry of only the hosts where it failed. Both are new releases of the same commit and recipe, so
the builder reuses the artifact and hosts that hold it extract it from their cache."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain.errors import Conflict
from ferry.domain.release import ReleaseState, RequestRelease
from services.gateway.api.http import current_user, in_session
from services.gateway.api.openapi import Operation
from services.gateway.api.releases import (
    ID_PARAM,
    load_release,
    new_release_id,
    release_id_param,
    request_release,
)
from services.gateway.api.releases_schema import ReleaseCreated


async def _built(request: Request) -> ReleaseState:
    release_id = release_id_param(request)
    old = (await load_release(request, release_id)).state
    if old.plan is None or old.commit is None or old.artifact is None:
        raise Conflict(f"release {release_id} has no built artifact to release again", field="id")
    return old


async def _again(request: Request, old: ReleaseState, **plan_changes: object) -> Response:
    """Request ``old``'s commit again with its own recipe, on the environment's plan of today."""
    assert old.plan is not None and old.commit is not None
    plan = await in_session(request, repo.environment_plan, old.project, old.environment)
    plan = plan.model_copy(update={"recipe": old.plan.recipe, **plan_changes})
    command = RequestRelease(
        project=old.project,
        environment=old.environment,
        ref=old.commit,
        requested_by=current_user(request),
        plan=plan,
    )
    return await request_release(request, new_release_id(), command)


async def rollback_release(request: Request) -> Response:
    """Release this release's commit again, with its own recipe, to its environment's current hosts."""
    old = await _built(request)
    # hosts that still hold its directory switch back to it at once (the agent checks the digest)
    return await _again(request, old, restores=old.release_id)


async def retry_release(request: Request) -> Response:
    """Release this release's artifact again to the hosts where it failed (or was rolled back),
    leaving the hosts where it succeeded untouched."""
    old = await _built(request)
    assert old.plan is not None
    if not old.terminal:
        raise Conflict(f"release {old.release_id} is still {old.status}: retry once it ended", field="id")
    failed = tuple(h for h in old.plan.hosts if old.hosts[h].status != "succeeded")
    if not failed:
        raise Conflict(f"release {old.release_id} failed on no host: nothing to retry", field="id")
    return await _again(request, old, hosts=failed)


TAG = "releases"
OPERATIONS = [
    Operation(
        "POST",
        "/releases/{id}/rollback",
        rollback_release,
        "Roll back: release this release's commit again with its recipe (the artifact is reused)",
        TAG,
        ok=202,
        response=ReleaseCreated,
        errors=(404, 409, 422, 503),
        path_params=ID_PARAM,
    ),
    Operation(
        "POST",
        "/releases/{id}/retry",
        retry_release,
        "Retry the hosts where this release failed: its artifact and recipe, only those hosts",
        TAG,
        ok=202,
        response=ReleaseCreated,
        errors=(404, 409, 422, 503),
        path_params=ID_PARAM,
    ),
]
