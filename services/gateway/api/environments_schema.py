"""The bodies of ``/api/projects/{project}/environments``: hosts in order, the rollout and its limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from ferry.domain.vocabulary import OnBusy, Strategy
from services.gateway.api.bodies import Input, Output, Patch
from services.gateway.api.fields import Integral, Name, Slug
from services.gateway.api.schemarules import ferry_error

HostNames = Annotated[
    list[Name], Field(min_length=1, max_length=1000, json_schema_extra={"uniqueItems": True})
]


def _unique(names: list[str] | None, field: str) -> None:
    if names is not None and len(set(names)) != len(names):
        raise ferry_error("each host may appear once", loc=field)


BatchSize = Annotated[int, Field(ge=1, le=1000), Integral]
CanaryPause = Annotated[float, Field(ge=0, le=7 * 24 * 3600, allow_inf_nan=False)]
_STRATEGY_DOC = (
    "all: up to `concurrency` hosts at once; rolling: `batch_size` hosts per batch, each batch "
    "done before the next; canary: `canary_size` hosts, then a pause until resumed (or for "
    "`canary_pause` seconds), then the rest (in batches when `batch_size` is set)"
)


_ON_BUSY_DOC = (
    "a release requested while another release of this environment runs: queue waits its turn "
    "(status queued, with its position); reject answers 409 naming the running release"
)


class EnvironmentFields(Input):
    hosts: HostNames = Field(description="host names, in rollout order")
    concurrency: Annotated[int, Field(ge=1, le=1000), Integral] = 1
    max_failures: Annotated[int, Field(ge=0, le=1000), Integral] = 0
    require_approval: bool = False
    allow_self_approval: bool = Field(
        default=False, description="four-eyes off: the requester may approve their own release"
    )
    rollback_on_failure: bool = True
    strategy: Strategy = Field(default="all", description=_STRATEGY_DOC)
    batch_size: BatchSize | None = Field(
        default=None, description="rolling: hosts per batch (default: concurrency)"
    )
    canary_size: BatchSize = Field(default=1, description="canary: hosts in the canary batch")
    canary_pause: CanaryPause | None = Field(
        default=None,
        description="canary: seconds before the rollout resumes by itself; null waits for a resume",
    )
    on_busy: OnBusy = Field(default="queue", description=_ON_BUSY_DOC)

    @model_validator(mode="after")
    def _hosts_unique(self) -> EnvironmentFields:
        _unique(self.hosts, "hosts")
        return self


class EnvironmentIn(EnvironmentFields):
    name: Slug


class EnvironmentPatch(Patch):
    NULLABLE = frozenset({"batch_size", "canary_pause"})

    hosts: HostNames | None = None
    concurrency: Annotated[int, Field(ge=1, le=1000), Integral] | None = None
    max_failures: Annotated[int, Field(ge=0, le=1000), Integral] | None = None
    require_approval: bool | None = None
    allow_self_approval: bool | None = None
    rollback_on_failure: bool | None = None
    strategy: Strategy | None = None
    batch_size: BatchSize | None = Field(default=None, description="null: batches of `concurrency`")
    canary_size: BatchSize | None = None
    canary_pause: CanaryPause | None = Field(default=None, description="null: wait for a resume")
    on_busy: OnBusy | None = Field(default=None, description=_ON_BUSY_DOC)

    @model_validator(mode="after")
    def _hosts_unique(self) -> EnvironmentPatch:
        _unique(self.hosts, "hosts")
        return self


class EnvironmentOut(Output):
    project: str
    name: str
    hosts: list[str]
    concurrency: int
    max_failures: int
    require_approval: bool
    allow_self_approval: bool = False
    rollback_on_failure: bool
    strategy: Strategy
    batch_size: int | None
    canary_size: int
    canary_pause: float | None
    on_busy: OnBusy
    active_release: str | None = Field(
        default=None, description="the release holding the environment (one at a time), if any"
    )
    queue: list[str] = Field(default_factory=list, description="releases waiting their turn, in order")


class EnvironmentLockOut(Output):
    active_release: str | None = Field(description="the release holding the environment, if any")
    since: str | None = Field(default=None, description="when it took the environment (ISO time)")
    token: int = Field(description="fencing token: grows each time the lock changes hands")
    queue: list[str] = Field(description="releases waiting their turn, in request order")


class EnvironmentList(Output):
    environments: list[EnvironmentOut]
