"""The bodies of the fleet views: what each host runs, by the history and (doctor) on the host."""

from __future__ import annotations

from pydantic import Field

from services.gateway.api.bodies import Output


class FleetHostOut(Output):
    name: str
    release: str | None = Field(
        description="the release `current` should name (null: ferry never switched it)"
    )
    by_release: str | None = Field(description="the release that last switched the host (or rolled it back)")
    release_status: str | None = Field(description="that release's status")


class FleetOut(Output):
    hosts: list[FleetHostOut]


class DoctorHostOut(FleetHostOut):
    live: str | None = Field(description="the release `current` names on the host now")
    error: str | None = Field(description="why the host could not be read")
    drift: bool = Field(description="the host runs something else than the history says")


class DoctorOut(Output):
    hosts: list[DoctorHostOut]
    drift: list[str] = Field(description="the hosts whose live release differs from the record")
