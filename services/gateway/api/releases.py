"""``/api/releases``: request a release, follow it, approve, reject, resume or cancel it.

A single release is always computed by replaying its own events from the event store, so
its ``last_seq`` is exact and a client can follow the WebSocket from there; the list comes
from the SQL read model.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ferry.db import repo
from ferry.domain.errors import ConcurrencyError, InvalidInput, NotFound
from ferry.domain.events import (
    HOST_STEPS,
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    HostStepFinished,
    ReleasePaused,
    utcnow,
)
from ferry.domain.release import (
    Approve,
    Cancel,
    Command,
    Reject,
    ReleaseState,
    RequestRelease,
    Resume,
    decide,
    replay,
)
from ferry.infra.commands import Loaded, append_decided
from ferry.infra.eventstore import StoredEvent
from services.gateway.api import locks
from services.gateway.api.http import current_user, gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.schemas import (
    RELEASE_ID_PATTERN,
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


# --- the view, replayed -------------------------------------------------------------
def release_view(release_id: str, history: Sequence[StoredEvent]) -> ReleaseOut:
    """The release as its events tell it (plan order for hosts, HOST_STEPS order for steps)."""
    state = replay(release_id, [s.event for s in history])
    hooks: list[HookOut] = []
    build_log: str | None = None
    build_tail = ""
    build_status = "waiting"
    step_detail: dict[tuple[str, str], tuple[str, str | None]] = {}
    pause: PauseOut | None = None
    for stored in history:
        e = stored.event
        match e:
            case ReleasePaused():
                pause = PauseOut(
                    paused_at=e.at, hosts_done=list(e.hosts_done), resume_at=e.resume_at, resumed_by=None
                )
            case BuildStarted():
                build_status = "running"
            case BuildHookFinished():
                hooks.append(
                    HookOut(
                        index=e.index,
                        command=e.command,
                        exit_code=e.exit_code,
                        duration=e.duration,
                        output_tail=e.output_tail,
                    )
                )
            case ArtifactPackaged():
                build_status, build_log = "succeeded", e.log_digest
            case BuildFailed():
                build_status, build_log, build_tail = "failed", e.log_digest, e.output_tail
            case HostStepFinished():
                log = e.detail.get("log_digest")
                step_detail[(e.host, e.step)] = (e.output_tail, log if isinstance(log, str) else None)
    if state.terminal and build_status in ("waiting", "running"):
        build_status = "cancelled"
    plan_hosts = state.plan.hosts if state.plan else ()
    hosts = []
    for name in plan_hosts:
        h = state.hosts[name]
        steps = []
        for step in HOST_STEPS:
            s = h.steps.get(step)
            tail_text, log_digest = step_detail.get((name, step), ("", None))
            steps.append(
                StepOut(
                    step=step,
                    status=s.status if s else "waiting",
                    started_at=s.started_at if s else None,
                    duration=s.duration if s else None,
                    exit_code=s.exit_code if s else None,
                    output_tail=tail_text,
                    log_digest=log_digest,
                )
            )
        hosts.append(
            ReleaseHostOut(name=name, status=h.status, failure=h.failure, steps=steps, instant=h.release_dir)
        )
    art = state.artifact
    return ReleaseOut(
        id=release_id,
        project=state.project,
        environment=state.environment,
        ref=state.ref,
        commit=state.commit,
        status=state.status,
        requested_by=state.requested_by,
        requested_at=state.requested_at,
        finished_at=state.finished_at,
        reason=state.reason,
        version=len(history),
        last_seq=history[-1].seq if history else 0,
        artifact=(
            ArtifactOut(digest=art.digest, size=art.size, format=art.format, reused=art.reused)  # type: ignore[arg-type]
            if art
            else None
        ),
        build=BuildOut(status=build_status, hooks=hooks, log_digest=build_log, output_tail=build_tail),  # type: ignore[arg-type]
        hosts=hosts,
        links=_links(release_id),
        pause=pause.model_copy(update={"resumed_by": state.resumed_by}) if pause else None,
    )


def log_digests(history: Sequence[StoredEvent]) -> set[str]:
    """Every log this release's events point at: the only logs its API may serve."""
    found: set[str] = set()
    for stored in history:
        e = stored.event
        if isinstance(e, ArtifactPackaged | BuildFailed) and e.log_digest:
            found.add(e.log_digest)
        elif isinstance(e, HostStepFinished) and isinstance(e.detail.get("log_digest"), str):
            found.add(e.detail["log_digest"])
    return found


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
    events = decide(ReleaseState(release_id), command, utcnow())  # stamped after its place in line
    try:
        stored = await append_decided(gw(request).bus.histories, Loaded(ReleaseState(release_id)), events)
    except BaseException:
        await locks.leave(request, command.project, command.environment, release_id)
        raise
    seq = stored[-1].seq
    state = replay(release_id, events)
    created = ReleaseCreated(id=release_id, status=state.status, last_seq=seq, links=_links(release_id))
    return respond(created, 202, {"Location": created.links.self})


async def get_release(request: Request) -> Response:
    release_id = release_id_param(request)
    view = release_view(release_id, await load_history(request, release_id))
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
    history = await load_history(request, release_id)
    if not _DIGEST.match(digest) or digest not in log_digests(history):
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
    command: Command
    if make is Approve or make is Resume:
        command = Approve(by=by) if make is Approve else Resume(by=by)
    elif make is Reject:
        command = Reject(by=by, reason=body.reason)
    else:
        command = Cancel(by=by, reason=body.reason)
    histories = gw(request).bus.histories
    for attempt in range(APPEND_ATTEMPTS):
        loaded = await histories.get(release_id)
        if loaded.count == 0:
            raise NotFound(f"no release {release_id!r}", field="id")
        if isinstance(command, Approve) and loaded.state.status == "paused":
            command = Resume(by=by)  # "a pause until approved": approving a paused canary resumes it
        events = decide(loaded.state, command, utcnow())  # InvariantViolation -> 409 with the reason
        try:
            await append_decided(histories, loaded, events)
        except ConcurrencyError:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
            continue  # another writer appended: decide again against what is new
        return respond(release_view(release_id, await load_history(request, release_id)))
    raise AssertionError("unreachable")


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
