"""``/api/releases``: request a release, follow it, approve, reject, resume or cancel it.

A single release is its state folded by ``evolve`` from its own events (caught up with the event
store on every read, ``ferry.infra.commands.Histories``) and shown by ``ferry.domain.views``, so
its ``last_seq`` is exact and a client can follow the WebSocket from there; the list comes from
the SQL read model. Commands go through ``ferry.infra.commands.execute_loaded``, the one door.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ferry.db import repo
from ferry.domain.errors import InvalidInput, NotFound
from ferry.domain.events import utcnow
from ferry.domain.release import (
    Approve,
    Cancel,
    Command,
    Reject,
    ReleaseState,
    RequestRelease,
    Resume,
    decide,
)
from ferry.domain.validation import RELEASE_ID_PATTERN
from ferry.domain.views import ReleaseView, log_digests, release_view
from ferry.infra.commands import Loaded, execute_loaded
from ferry.infra.eventstore import StoredEvent
from services.gateway.api import locks
from services.gateway.api.http import current_user, gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.releases_schema import (
    ArtifactOut,
    BuildOut,
    EventList,
    HookOut,
    PauseOut,
    ReasonIn,
    ReleaseCreated,
    ReleaseHostOut,
    ReleaseIn,
    ReleaseLinks,
    ReleaseList,
    ReleaseOut,
    ReleaseQuery,
    ReleaseSummary,
    StepOut,
    StoredEventOut,
)

_RELEASE_ID = re.compile(RELEASE_ID_PATTERN)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
APPEND_ATTEMPTS = 5


def new_release_id(now: datetime | None = None) -> str:
    """``r`` + UTC time to the millisecond + a random suffix: sortable by request time, unique."""
    now = (now or utcnow()).astimezone(UTC)
    return f"r{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}-{secrets.token_hex(4)}"


def _links(release_id: str) -> ReleaseLinks:
    return ReleaseLinks(self=f"/api/releases/{release_id}", events=f"/api/releases/{release_id}/events")


def release_id_param(request: Request) -> str:
    release_id = str(request.path_params["id"])
    if not _RELEASE_ID.match(release_id):
        raise InvalidInput("a release id is 1-64 letters, digits, '_' or '-'", field="id")
    return release_id


async def load_history(request: Request, release_id: str) -> list[StoredEvent]:
    history = await gw(request).bus.events.load(release_id)
    if not history:
        raise NotFound(f"no release {release_id!r}", field="id")
    return history


# --- the view ---------------------------------------------------------------------
def release_out(view: ReleaseView, *, version: int, last_seq: int) -> ReleaseOut:
    """The API's form of ``ferry.domain.views.release_view`` (the one view API and CLI share)."""
    pause = view.pause
    build = view.build
    return ReleaseOut(
        id=view.id,
        project=view.project,
        environment=view.environment,
        ref=view.ref,
        commit=view.commit,
        status=view.status,
        requested_by=view.requested_by,
        requested_at=view.requested_at,
        finished_at=view.finished_at,
        reason=view.reason,
        version=version,
        last_seq=last_seq,
        artifact=None if view.artifact is None else ArtifactOut(**asdict(view.artifact)),
        build=BuildOut(
            status=build.status,
            hooks=[HookOut(**asdict(h)) for h in build.hooks],
            log_digest=build.log_digest,
            output_tail=build.output_tail,
        ),
        hosts=[
            ReleaseHostOut(
                name=h.name,
                status=h.status,
                failure=h.failure,
                steps=[StepOut(**asdict(s)) for s in h.steps],
                instant=h.instant,
            )
            for h in view.hosts
        ],
        links=_links(view.id),
        pause=None
        if pause is None
        else PauseOut(
            paused_at=pause.paused_at,
            hosts_done=list(pause.hosts_done),
            resume_at=pause.resume_at,
            resumed_by=pause.resumed_by,
        ),
    )


def loaded_out(loaded: Loaded) -> ReleaseOut:
    """The release as ``loaded`` holds it: its state's view, its event count and last sequence."""
    return release_out(release_view(loaded.state), version=loaded.count, last_seq=loaded.last_seq)


async def load_release(request: Request, release_id: str) -> Loaded:
    """The release caught up with its history (``ferry.infra.commands.Histories``); 404 if none."""
    loaded = await gw(request).bus.histories.get(release_id)
    if loaded.count == 0:
        raise NotFound(f"no release {release_id!r}", field="id")
    return loaded


# --- handlers -----------------------------------------------------------------------
async def create_release(request: Request) -> Response:
    body = await read_model(request, ReleaseIn)
    plan = await in_session(request, repo.environment_plan, body.project, body.environment)
    release_id = new_release_id()
    command = RequestRelease(
        project=body.project,
        environment=body.environment,
        ref=body.ref,
        requested_by=current_user(request, claimed=body.requested_by),
        plan=plan,
    )
    return await request_release(request, release_id, command)


async def request_release(request: Request, release_id: str, command: RequestRelease) -> Response:
    """Append a new release's ReleaseRequested; the orchestrator schedules the rest (202)."""
    decide(ReleaseState(release_id), command, utcnow())  # refuse a bad request before taking a place
    await locks.join(request, command.project, command.environment, release_id)
    try:  # decided again, stamped after its place in line
        loaded = await execute_loaded(gw(request).bus.histories, release_id, command)
    except BaseException:
        await locks.leave(request, command.project, command.environment, release_id)
        raise
    status, seq = loaded.state.status, loaded.last_seq
    created = ReleaseCreated(id=release_id, status=status, last_seq=seq, links=_links(release_id))
    return respond(created, 202, {"Location": created.links.self})


async def get_release(request: Request) -> Response:
    release_id = release_id_param(request)
    view = loaded_out(await load_release(request, release_id))
    if view.status in ("queued", "awaiting_approval"):
        lock = await gw(request).bus.locks.get(view.project, view.environment)
        position = lock.position(release_id)
        view = view.model_copy(update={"queue_position": position or None})
    return respond(view)


async def release_events(request: Request) -> Response:
    release_id = release_id_param(request)
    history = await load_history(request, release_id)
    return respond(
        EventList(events=[StoredEventOut(seq=s.seq, event=s.event.model_dump(mode="json")) for s in history])
    )


async def release_log(request: Request) -> Response:
    release_id = release_id_param(request)
    digest = str(request.path_params["digest"])
    state = (await load_release(request, release_id)).state
    if not _DIGEST.match(digest) or digest not in log_digests(state):
        raise NotFound(f"release {release_id} has no log {digest[:80]!r}", field="digest")
    stream = await gw(request).bus.artifacts.open_stream(digest)  # 404 before any byte is sent
    return StreamingResponse(
        stream.chunks,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Length": str(stream.size)},
    )


async def list_releases(request: Request) -> Response:
    params: dict[str, Any] = dict(request.query_params)
    query = ReleaseQuery.model_validate(params)
    rows = await in_session(
        request,
        repo.list_releases,
        project=query.project,
        environment=query.environment,
        status=query.status,
        limit=query.limit,
    )
    return respond(
        ReleaseList(
            releases=[
                ReleaseSummary(
                    id=r.id,
                    project=r.project,
                    environment=r.environment,
                    ref=r.ref,
                    commit=r.commit,
                    status=r.status,
                    requested_by=r.requested_by,
                    requested_at=r.requested_at,
                    finished_at=r.finished_at,
                    reason=r.reason,
                    artifact_digest=r.artifact_digest,
                    last_seq=r.last_seq,
                )
                for r in rows
            ]
        )
    )


async def _command(
    request: Request, make: type[Approve] | type[Reject] | type[Cancel] | type[Resume]
) -> Response:
    release_id = release_id_param(request)
    body = await read_model(request, ReasonIn, optional=True)
    by = current_user(request)

    def command(state: ReleaseState) -> Command:
        if state.status == "new":
            raise NotFound(f"no release {release_id!r}", field="id")
        if make is Approve and state.status == "paused":
            return Resume(by=by)  # "a pause until approved": approving a paused canary resumes it
        if make is Approve:
            return Approve(by=by)
        if make is Resume:
            return Resume(by=by)
        if make is Reject:
            return Reject(by=by, reason=body.reason)
        return Cancel(by=by, reason=body.reason)

    # InvariantViolation from decide -> 409 with the reason
    loaded = await execute_loaded(gw(request).bus.histories, release_id, command, attempts=APPEND_ATTEMPTS)
    return respond(loaded_out(loaded))


async def approve_release(request: Request) -> Response:
    return await _command(request, Approve)


async def reject_release(request: Request) -> Response:
    return await _command(request, Reject)


async def cancel_release(request: Request) -> Response:
    return await _command(request, Cancel)


async def resume_release(request: Request) -> Response:
    return await _command(request, Resume)


TAG = "releases"
ID_PARAM = {"id": RELEASE_ID_PATTERN}
OPERATIONS = [
    Operation(
        "POST",
        "/releases",
        create_release,
        "Request a release of a git ref to an environment",
        TAG,
        ok=202,
        response=ReleaseCreated,
        body=ReleaseIn,
        errors=(404, 409, 422, 503),
    ),
    Operation(
        "GET",
        "/releases",
        list_releases,
        "Releases, newest first (from the read model)",
        TAG,
        response=ReleaseList,
        query=ReleaseQuery,
        errors=(422,),
    ),
    Operation(
        "GET",
        "/releases/{id}",
        get_release,
        "One release, replayed from its events",
        TAG,
        response=ReleaseOut,
        errors=(404, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "GET",
        "/releases/{id}/events",
        release_events,
        "The release's events, in order",
        TAG,
        response=EventList,
        errors=(404, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "GET",
        "/releases/{id}/logs/{digest}",
        release_log,
        "A full log one of its events points at",
        TAG,
        response="text/plain",
        errors=(404, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "POST",
        "/releases/{id}/approve",
        approve_release,
        "Approve a release awaiting approval (or resume a paused canary)",
        TAG,
        response=ReleaseOut,
        body=ReasonIn,
        body_required=False,
        errors=(404, 409, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "POST",
        "/releases/{id}/reject",
        reject_release,
        "Reject a release awaiting approval",
        TAG,
        response=ReleaseOut,
        body=ReasonIn,
        body_required=False,
        errors=(404, 409, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "POST",
        "/releases/{id}/cancel",
        cancel_release,
        "Cancel a release no host runs yet; a paused canary rolls its hosts back, then ends cancelled",
        TAG,
        response=ReleaseOut,
        body=ReasonIn,
        body_required=False,
        errors=(404, 409, 422),
        path_params=ID_PARAM,
    ),
    Operation(
        "POST",
        "/releases/{id}/resume",
        resume_release,
        "Resume a paused canary: release the remaining hosts (409 when not paused)",
        TAG,
        response=ReleaseOut,
        body=ReasonIn,
        body_required=False,
        errors=(404, 409, 422),
        path_params=ID_PARAM,
    ),
]
