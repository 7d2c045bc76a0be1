"""One release at a time per environment, seen from the API: joining the lock when a release is
requested, the lock in an environment's view, and an admin's force-unlock."""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain.errors import Conflict
from ferry.domain.release import Unlock
from ferry.infra.commands import execute
from ferry.infra.envlock import EnvironmentBusy, EnvLock
from services.gateway.api.bodies import Input
from services.gateway.api.environments_schema import EnvironmentLockOut
from services.gateway.api.fields import NON_BLANK
from services.gateway.api.http import current_user, gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation

UnlockReason = Annotated[str, StringConstraints(min_length=1, max_length=2000), *NON_BLANK]


class UnlockIn(Input):
    reason: UnlockReason = Field(description="why the lock is forced (recorded in the holder's end)")


log = logging.getLogger("ferry.gateway")


async def join(request: Request, project: str, environment: str, release_id: str) -> EnvLock:
    """Take the environment or a place in its queue for a release about to be requested.

    ``on_busy: reject`` answers 409 naming the holder instead of queueing. A holder whose end
    the orchestrator has not handed on yet does not count as busy.
    """
    info = await in_session(request, repo.get_environment, project, environment)
    bus = gw(request).bus
    reject = info.on_busy == "reject"
    try:
        return await bus.locks.join(project, environment, release_id, reject_if_busy=reject)
    except EnvironmentBusy:
        lock = await bus.locks.get(project, environment)
        if lock.holder is None or not (await bus.histories.state(lock.holder)).terminal:
            raise
        await bus.locks.leave(project, environment, lock.holder)
        return await bus.locks.join(project, environment, release_id, reject_if_busy=reject)


async def leave(request: Request, project: str, environment: str, release_id: str) -> None:
    """Give the place back when the request could not be recorded."""
    await gw(request).bus.locks.leave(project, environment, release_id)


def lock_out(lock: EnvLock) -> EnvironmentLockOut:
    return EnvironmentLockOut(
        active_release=lock.holder, since=lock.since, token=lock.token, queue=lock.waiting
    )


async def get_lock(request: Request) -> Response:
    p = request.path_params
    await in_session(request, repo.get_environment, p["project"], p["env"])  # 404 for a stranger
    return respond(lock_out(await gw(request).bus.locks.get(p["project"], p["env"])))


async def unlock(request: Request) -> Response:
    """Force the environment free: its holder ends as failed (who and why in its reason), the next
    queued release starts."""
    p = request.path_params
    project, environment = p["project"], p["env"]
    body = await read_model(request, UnlockIn)
    await in_session(request, repo.get_environment, project, environment)
    bus = gw(request).bus
    lock = await bus.locks.get(project, environment)
    if lock.holder is None:
        raise Conflict(f"{project}/{environment} is not locked: no release holds it", field="env")
    by = current_user(request)
    holder = lock.holder
    state = await bus.histories.state(holder)
    if state.status != "new" and not state.terminal:
        await execute(bus.histories, holder, Unlock(by=by, reason=body.reason))
    _, after = await bus.locks.force(project, environment, holder)
    log.warning(
        "environment lock forced",
        extra={"environment": f"{project}/{environment}", "release_id": holder, "by": by, "why": body.reason},
    )
    return respond(lock_out(after))


TAG = "environments"
BASE = "/projects/{project}/environments/{env}"
OPERATIONS = [
    Operation(
        "GET",
        BASE + "/lock",
        get_lock,
        "Which release holds the environment, and which wait their turn",
        TAG,
        response=EnvironmentLockOut,
        errors=(404,),
    ),
    Operation(
        "POST",
        BASE + "/unlock",
        unlock,
        "Force the environment free (admin): the holder ends as failed, the next release starts",
        TAG,
        response=EnvironmentLockOut,
        body=UnlockIn,
        errors=(404, 409, 422),
    ),
]
