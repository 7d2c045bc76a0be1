"""Garbage collection on demand (admin): one pass over the object store (``ferry.infra.gc``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from ferry.infra import gc
from services.gateway.api.http import gw, respond
from services.gateway.api.openapi import Operation


class GcOut(BaseModel):
    kept_releases: int = Field(description="releases whose artifacts stay (unfinished, or kept on a host)")
    kept_artifacts: int
    objects: int = Field(description="objects in the store before the pass")
    removed: int
    removed_digests: list[str]
    bytes_freed: int
    spared_young: int = Field(description="unneeded artifacts younger than FERRY_GC_GRACE, left for now")
    spared_building: int = Field(
        description="unneeded artifacts of a project with a build running, left for now"
    )
    duration: float
    archived_releases: int = Field(description="releases whose events and logs moved to the history archive")
    archived_events: int
    logs_archived: int
    logs_removed: int
    log_bytes_freed: int
    refused: str | None = Field(description="why history retention removed nothing (misconfigured)")


async def run_gc(request: Request) -> Response:
    deps = gw(request)
    return respond(
        GcOut.model_validate(
            await gc.run_pass(deps.bus, deps.sessions, gc.GcSettings.from_settings(deps.settings))
        )
    )


OPERATIONS = [
    Operation(
        "POST",
        "/gc",
        run_gc,
        "Collect now (admin): artifacts no kept release needs, then old history to the archive if set",
        "operations",
        response=GcOut,
        errors=(),
    ),
]
