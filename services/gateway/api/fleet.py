"""What the fleet runs: per host, the release the history says it runs, and a drift check that
reads ``current`` on every host (through an agent of the host's group) and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import nats.errors
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import fleet, repo
from ferry.domain.errors import StoreUnavailable
from ferry.infra import subjects
from services.gateway.api.fleet_schema import DoctorHostOut, DoctorOut, FleetHostOut, FleetOut
from services.gateway.api.http import gw, in_session, respond
from services.gateway.api.openapi import Operation

DOCTOR_TIMEOUT = 60.0


def _records(
    session: Session, project: str, environment: str
) -> tuple[str, list[fleet.HostRecord], dict[str, str]]:
    env = repo.get_environment(session, project, environment)
    deploy_path = repo.get_project(session, project).recipe().deploy_path
    groups = {h: repo.get_host(session, h).agent_group for h in env.hosts}
    return deploy_path, fleet.host_records(session, project, environment, env.hosts), groups


def _host_out(r: fleet.HostRecord) -> FleetHostOut:
    return FleetHostOut(name=r.host, release=r.release, by_release=r.by_release, release_status=r.status)


async def list_fleet(request: Request) -> Response:
    p = request.path_params
    _, records, _ = await in_session(request, _records, p["project"], p["env"])
    return respond(FleetOut(hosts=[_host_out(r) for r in records]))


async def _ask(request: Request, group: str, deploy_path: str, hosts: list[str]) -> dict[str, Any]:
    ask = json.dumps({"deploy_path": deploy_path, "hosts": hosts}).encode()
    try:
        msg = await gw(request).bus.nc.request(subjects.doctor(group), ask, timeout=DOCTOR_TIMEOUT)
    except nats.errors.NoRespondersError:
        return {h: {"current": None, "error": f"no agent of group {group!r} is running"} for h in hosts}
    except nats.errors.TimeoutError as exc:
        raise StoreUnavailable(
            f"the agents of group {group!r} did not answer in {DOCTOR_TIMEOUT:.0f}s"
        ) from exc
    answer = json.loads(msg.data)
    return dict(answer.get("hosts") or {h: {"current": None, "error": answer.get("error")} for h in hosts})


async def doctor(request: Request) -> Response:
    p = request.path_params
    deploy_path, records, groups = await in_session(request, _records, p["project"], p["env"])
    by_group: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by_group[groups[r.host]].append(r.host)
    answers: dict[str, dict[str, Any]] = {}
    for found in await asyncio.gather(*(_ask(request, g, deploy_path, hs) for g, hs in by_group.items())):
        answers.update(found)
    hosts = []
    for r in records:
        live = answers.get(r.host, {})
        error = live.get("error")
        current = live.get("current")
        hosts.append(
            DoctorHostOut(
                **_host_out(r).model_dump(),
                live=current,
                error=error,
                drift=error is None and current != r.release,
            )
        )
    return respond(DoctorOut(hosts=hosts, drift=[h.name for h in hosts if h.drift]))


TAG = "environments"
BASE = "/projects/{project}/environments/{env}"
OPERATIONS = [
    Operation(
        "GET",
        BASE + "/hosts",
        list_fleet,
        "Every host of the environment and the release it runs, as the release history says",
        TAG,
        response=FleetOut,
        errors=(404,),
    ),
    Operation(
        "GET",
        BASE + "/doctor",
        doctor,
        "Drift check: read `current` on every host over SSH (changes nothing) and compare with the history",
        TAG,
        response=DoctorOut,
        errors=(404, 503),
    ),
]
