"""The bodies of ``/api/projects``: a repository, how to build it and how to install it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ferry.domain.vocabulary import ArtifactFormat, HealthKind
from services.gateway.api.bodies import Input, Output, Patch
from services.gateway.api.fields import (
    MAX_COMMAND,
    Command,
    DeployPath,
    ExcludePattern,
    Integral,
    Name,
    RelativePath,
    RepoUrl,
    Slug,
    http_url,
)
from services.gateway.api.schemarules import (
    COMMAND_PATTERN,
    HEALTH_URL_PATTERN,
    compiled,
    ferry_error,
    when,
)


class HealthIn(Input):
    model_config = ConfigDict(
        json_schema_extra={
            # A command or http check needs its target (the default "" is neither).
            "allOf": [
                when(
                    "kind",
                    "command",
                    {"required": ["target"], "properties": {"target": {"pattern": COMMAND_PATTERN}}},
                ),
                when(
                    "kind",
                    "http",
                    {"required": ["target"], "properties": {"target": {"pattern": HEALTH_URL_PATTERN}}},
                ),
            ]
        }
    )

    kind: HealthKind = "none"
    target: Annotated[str, StringConstraints(max_length=MAX_COMMAND)] = ""
    timeout: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retries: Annotated[int, Field(ge=1, le=1000), Integral] = 5
    interval: Annotated[float, Field(ge=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _target_fits_kind(self) -> HealthIn:
        if self.kind == "command" and not self.target.strip():
            raise ferry_error("a command health check needs a command", loc="target")
        if self.kind == "http":
            try:
                http_url(self.target)
            except ValueError as exc:
                raise ferry_error(str(exc), loc="target") from None
            if compiled(HEALTH_URL_PATTERN).search(self.target) is None:
                raise ferry_error(f"the URL must match {HEALTH_URL_PATTERN}", loc="target")
        return self


class ProjectFields(Input):
    repo_url: RepoUrl
    repo_credential: Name | None = None
    build_hooks: Annotated[list[Command], Field(max_length=100)] = []
    hook_timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    hook_network: bool = Field(default=True, description="false: build hooks run without network")
    excludes: Annotated[list[ExcludePattern], Field(max_length=1000)] = []
    artifact_format: ArtifactFormat = "zst"
    deploy_path: DeployPath
    shared_files: Annotated[list[RelativePath], Field(max_length=1000)] = []
    shared_dirs: Annotated[list[RelativePath], Field(max_length=1000)] = []
    keep_releases: Annotated[int, Field(ge=1, le=1000), Integral] = 5
    pre_release: Command | None = None
    post_release: Command | None = None
    restart: Command | None = None
    health: HealthIn = HealthIn()


class ProjectIn(ProjectFields):
    name: Slug


class ProjectPatch(Patch):
    NULLABLE = frozenset({"repo_credential", "pre_release", "post_release", "restart"})

    repo_url: RepoUrl | None = None
    repo_credential: Name | None = None
    build_hooks: Annotated[list[Command], Field(max_length=100)] | None = None
    hook_timeout: Annotated[float, Field(gt=0, le=86400)] | None = None
    hook_network: bool | None = None
    excludes: Annotated[list[ExcludePattern], Field(max_length=1000)] | None = None
    artifact_format: ArtifactFormat | None = None
    deploy_path: DeployPath | None = None
    shared_files: Annotated[list[RelativePath], Field(max_length=1000)] | None = None
    shared_dirs: Annotated[list[RelativePath], Field(max_length=1000)] | None = None
    keep_releases: Annotated[int, Field(ge=1, le=1000), Integral] | None = None
    pre_release: Command | None = None
    post_release: Command | None = None
    restart: Command | None = None
    health: HealthIn | None = None


class HealthOut(Output):
    kind: HealthKind
    target: str
    timeout: float
    retries: int
    interval: float


class ProjectOut(Output):
    name: str
    repo_url: str
    repo_credential: str | None
    build_hooks: list[str]
    hook_timeout: float
    hook_network: bool = True
    excludes: list[str]
    artifact_format: ArtifactFormat
    deploy_path: str
    shared_files: list[str]
    shared_dirs: list[str]
    keep_releases: int
    pre_release: str | None
    post_release: str | None
    restart: str | None
    health: HealthOut
    environments: list[str]
    created_at: datetime


class ProjectList(Output):
    projects: list[ProjectOut]


class GitRefOut(Output):
    name: str
    commit: str


class RefsOut(Output):
    project: str
    branches: list[GitRefOut]
    tags: list[GitRefOut]
