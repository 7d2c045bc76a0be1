"""Request and response models of the REST API: they validate input and generate the OpenAPI document.

Input models are strict (no type coercion) and forbid unknown fields. Checks that ferry's
core already owns (git refs, repository URLs, deploy paths) call it, so a rule lives once;
their errors keep ferry's code (``INVALID_REF``…) through the ``"ferry"`` error type.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import paramiko
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ferry.domain.agentgroups import DEFAULT_GROUP, GROUP_PATTERN
from ferry.domain.errors import FerryError
from ferry.domain.validation import (
    key_fingerprint,
    validate_deploy_path,
    validate_ref,
    validate_relative_path,
    validate_repo_url,
)
from ferry.infra.sshkeys import load_private_key
from services.gateway.api.schemarules import (
    ADDRESS_PATTERN,
    COMMAND_PATTERN,
    DEPLOY_PATH_PATTERN,
    HEALTH_URL_PATTERN,
    REF_PATTERN,
    RELATIVE_PATH_PATTERN,
    REPO_URL_PATTERN,
    null_problem,
    patch_schema,
    stated,
    when,
)
from services.gateway.api.text import check_value, refuse_url_credentials

T = TypeVar("T")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
RELEASE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SECRET = 64 * 1024
MAX_COMMAND = 8 * 1024


def ferry_error(message: str, code: str = "INVALID_INPUT", loc: str | None = None) -> PydanticCustomError:
    """A validation error carrying ferry's code and, for model-level checks, the field it is about."""
    ctx: dict[str, Any] = {"message": message, "code": code}
    if loc is not None:
        ctx["loc"] = loc
    return PydanticCustomError("ferry", "{message}", ctx)


def ferry_check(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """Run one of ferry's validators inside pydantic, keeping its error code and message."""

    def run(value: Any) -> T:
        try:
            return check(value)
        except FerryError as exc:
            raise ferry_error(exc.message, exc.code) from None

    return run


def _host_key(line: str) -> str:
    """An OpenSSH public key line ``type base64 [comment]``, returned as ``type base64``."""
    parts = line.split()
    if len(parts) not in (2, 3):
        raise ValueError("host key must be an OpenSSH public key line: 'ssh-ed25519 AAAA… [comment]'")
    kind, blob = parts[0], parts[1]
    try:
        raw = base64.b64decode(blob, validate=True)
        key = paramiko.PKey.from_type_string(kind, raw)
    except (binascii.Error, ValueError):
        raise ValueError("host key: the key data is not base64") from None
    except Exception:  # noqa: BLE001 - paramiko raises many kinds for a malformed blob
        raise ValueError(f"host key: not a valid {kind} public key") from None
    if key.get_base64() != blob or base64.b64decode(key.get_base64()) != raw:
        # paramiko pads a short blob with zeros; a pinned key must be exactly the host's key.
        raise ValueError(f"host key: not a complete {kind} public key")
    return f"{key.get_name()} {key.get_base64()}"


def _address(value: str) -> str:
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if host.startswith("-") or not all(c.isalnum() or c in ".-:_" for c in host):
        raise ValueError("address must be a host name or an IP address")
    return host


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("not a well-formed URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http health check needs an http:// or https:// URL")
    return value


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Command = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND)]
RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    AfterValidator(ferry_check(validate_relative_path)),
    *stated(RELATIVE_PATH_PATTERN, "a relative path of plain names", "INVALID_PATH"),
]
ExcludePattern = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
DeployPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    AfterValidator(ferry_check(validate_deploy_path)),
    *stated(DEPLOY_PATH_PATTERN, "an absolute path of plain names", "INVALID_PATH"),
]
RepoUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(ferry_check(validate_repo_url)),
    AfterValidator(refuse_url_credentials),
    *stated(REPO_URL_PATTERN, "an https://, ssh://, file:// or user@host:path URL"),
]
GitRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(ferry_check(validate_ref)),
    *stated(REF_PATTERN, "a branch, tag or commit name", "INVALID_REF"),
]
HostKey = Annotated[
    str,
    StringConstraints(max_length=16 * 1024),
    AfterValidator(_host_key),
    Field(json_schema_extra={"format": "ssh-public-key"}),
]
Address = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(_address),
    *stated(ADDRESS_PATTERN, "a host name or an IP address"),
]
User = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Reason = Annotated[str, StringConstraints(max_length=2000)]
AgentGroup = Annotated[
    str,
    StringConstraints(pattern=GROUP_PATTERN),
    Field(description="only agents started with this FERRY_AGENT_GROUP serve the host"),
]


class Input(BaseModel):
    """A request model: strict types, no unknown fields, and the one text policy (``api/text.py``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text_policy(cls, value: Any) -> Any:
        return check_value(value)


class Patch(Input):
    """A PATCH body: fields left out keep their value; only ``NULLABLE`` ones may be null (clears)."""

    model_config = ConfigDict(json_schema_extra=patch_schema)
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        name = null_problem(data, cls.NULLABLE)
        if name is not None:
            raise ferry_error(f"{name} cannot be null; leave it out to keep its value", loc=name)
        return data


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ----------------------------------------------------------------------
class ErrorDetail(Output):
    field: str
    message: str
    type: str


class ErrorInfo(Output):
    code: str = Field(description="stable machine-readable code, e.g. NOT_FOUND, INVALID_REF")
    message: str
    field: str | None = Field(description="the request field at fault ('body' for an unreadable body)")
    details: list[ErrorDetail] | None = None


class ErrorResponse(Output):
    error: ErrorInfo


# --- credentials -----------------------------------------------------------------
class CredentialIn(Input):
    model_config = ConfigDict(
        json_schema_extra=when("kind", "ssh_key", {"properties": {"secret": {"format": "ssh-private-key"}}})
    )

    name: Name
    kind: Literal["ssh_key", "password"]
    secret: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET)] = Field(
        description="an SSH private key (OpenSSH or PEM, unencrypted) or a password; write-only",
        json_schema_extra={"writeOnly": True},
    )

    @model_validator(mode="after")
    def _key_parses(self) -> CredentialIn:
        if self.kind == "ssh_key":
            self.summary()  # raises when the key does not parse
        return self

    def summary(self) -> str:
        """A public description of the secret: the key's type and fingerprint, never the secret."""
        if self.kind == "password":
            return "password"
        try:
            key = load_private_key(self.secret)
        except FerryError:
            raise ferry_error(
                "not a readable SSH private key (OpenSSH or PEM, Ed25519/ECDSA/RSA, without a passphrase)",
                loc="secret",
            ) from None
        return f"{key.get_name()} {key_fingerprint(key.get_base64())}"


class CredentialOut(Output):
    name: str
    kind: Literal["ssh_key", "password"]
    fingerprint: str = Field(description="public summary: key type and SHA256 fingerprint, or 'password'")
    created_at: datetime


class CredentialList(Output):
    credentials: list[CredentialOut]


# --- hosts -------------------------------------------------------------------------
class HostFields(Input):
    model_config = ConfigDict(
        json_schema_extra=when(
            "host_key_policy",
            "pinned",
            {"required": ["host_key"], "properties": {"host_key": {"type": "string"}}},
            default=True,
        )
    )

    address: Address
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: User = "root"
    credential: Name
    host_key: HostKey | None = Field(
        default=None, description="the host's public key line, e.g. 'ssh-ed25519 AAAA…'"
    )
    host_key_policy: Literal["pinned", "tofu"] = Field(
        default="pinned",
        description="pinned: refuse any key but host_key; tofu: record the key seen on first connection",
    )
    agent_group: AgentGroup = DEFAULT_GROUP

    @model_validator(mode="after")
    def _pinned_needs_key(self) -> HostFields:
        if self.host_key_policy == "pinned" and self.host_key is None:
            raise ferry_error(
                "a pinned host needs its host key (or choose host_key_policy 'tofu')", loc="host_key"
            )
        return self


class HostIn(HostFields):
    name: Name


class HostPatch(Patch):
    NULLABLE = frozenset({"host_key"})

    address: Address | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: User | None = None
    credential: Name | None = None
    host_key: HostKey | None = None
    host_key_policy: Literal["pinned", "tofu"] | None = None
    agent_group: AgentGroup | None = None


class HostOut(Output):
    name: str
    address: str
    port: int
    user: str
    credential: str | None
    host_key: str | None
    host_key_policy: Literal["pinned", "tofu"]
    agent_group: str
    created_at: datetime


class HostList(Output):
    hosts: list[HostOut]


# --- projects ------------------------------------------------------------------------
class HealthIn(Input):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                when("kind", "command", {"properties": {"target": {"pattern": COMMAND_PATTERN}}}),
                when("kind", "http", {"properties": {"target": {"pattern": HEALTH_URL_PATTERN}}}),
            ]
        }
    )

    kind: Literal["none", "command", "http"] = "none"
    target: Annotated[str, StringConstraints(max_length=MAX_COMMAND)] = ""
    timeout: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retries: Annotated[int, Field(ge=1, le=1000)] = 5
    interval: Annotated[float, Field(ge=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _target_fits_kind(self) -> HealthIn:
        if self.kind == "command" and not self.target.strip():
            raise ferry_error("a command health check needs a command", loc="target")
        if self.kind == "http":
            try:
                _http_url(self.target)
            except ValueError as exc:
                raise ferry_error(str(exc), loc="target") from None
            if re.search(HEALTH_URL_PATTERN, self.target) is None:
                raise ferry_error(f"the URL must match {HEALTH_URL_PATTERN}", loc="target")
        return self


class ProjectFields(Input):
    repo_url: RepoUrl
    repo_credential: Name | None = None
    build_hooks: Annotated[list[Command], Field(max_length=100)] = []
    hook_timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    hook_network: bool = Field(default=True, description="false: build hooks run without network")
    excludes: Annotated[list[ExcludePattern], Field(max_length=1000)] = []
    artifact_format: Literal["zst", "gz", "none"] = "zst"
    deploy_path: DeployPath
    shared_files: Annotated[list[RelativePath], Field(max_length=1000)] = []
    shared_dirs: Annotated[list[RelativePath], Field(max_length=1000)] = []
    keep_releases: Annotated[int, Field(ge=1, le=1000)] = 5
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
    artifact_format: Literal["zst", "gz", "none"] | None = None
    deploy_path: DeployPath | None = None
    shared_files: Annotated[list[RelativePath], Field(max_length=1000)] | None = None
    shared_dirs: Annotated[list[RelativePath], Field(max_length=1000)] | None = None
    keep_releases: Annotated[int, Field(ge=1, le=1000)] | None = None
    pre_release: Command | None = None
    post_release: Command | None = None
    restart: Command | None = None
    health: HealthIn | None = None


class HealthOut(Output):
    kind: Literal["none", "command", "http"]
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
    artifact_format: Literal["zst", "gz", "none"]
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


# --- environments -----------------------------------------------------------------------
HostNames = Annotated[
    list[Name], Field(min_length=1, max_length=1000, json_schema_extra={"uniqueItems": True})
]


def _unique(names: list[str] | None, field: str) -> None:
    if names is not None and len(set(names)) != len(names):
        raise ferry_error("each host may appear once", loc=field)


RolloutStrategy = Literal["all", "rolling", "canary"]
BatchSize = Annotated[int, Field(ge=1, le=1000)]
CanaryPause = Annotated[float, Field(ge=0, le=7 * 24 * 3600, allow_inf_nan=False)]
_STRATEGY_DOC = (
    "all: up to `concurrency` hosts at once; rolling: `batch_size` hosts per batch, each batch "
    "done before the next; canary: `canary_size` hosts, then a pause until resumed (or for "
    "`canary_pause` seconds), then the rest (in batches when `batch_size` is set)"
)


OnBusy = Literal["queue", "reject"]
_ON_BUSY_DOC = (
    "a release requested while another release of this environment runs: queue waits its turn "
    "(status queued, with its position); reject answers 409 naming the running release"
)


class EnvironmentFields(Input):
    hosts: HostNames = Field(description="host names, in rollout order")
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 1
    max_failures: Annotated[int, Field(ge=0, le=1000)] = 0
    require_approval: bool = False
    allow_self_approval: bool = Field(
        default=False, description="four-eyes off: the requester may approve their own release"
    )
    rollback_on_failure: bool = True
    strategy: RolloutStrategy = Field(default="all", description=_STRATEGY_DOC)
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
    concurrency: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_failures: Annotated[int, Field(ge=0, le=1000)] | None = None
    require_approval: bool | None = None
    allow_self_approval: bool | None = None
    rollback_on_failure: bool | None = None
    strategy: RolloutStrategy | None = None
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
    strategy: RolloutStrategy
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


class EnvironmentList(Output):
    environments: list[EnvironmentOut]


# --- releases ----------------------------------------------------------------------------
ReleaseStatus = Literal[
    "new",
    "awaiting_approval",
    "queued",
    "building",
    "deploying",
    "paused",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
]


class ReleaseIn(Input):
    project: Slug
    environment: Slug
    ref: GitRef = Field(description="branch, tag, full ref name or commit id")
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None, description="defaults to the caller (X-Ferry-User, until authentication lands)"
    )


class ReasonIn(Input):
    reason: Reason = ""


class ReleaseLinks(Output):
    self: str
    events: str


class ReleaseCreated(Output):
    id: str
    status: ReleaseStatus
    last_seq: int
    links: ReleaseLinks


class ArtifactOut(Output):
    digest: str
    size: int
    format: Literal["zst", "gz", "none"]
    reused: bool


class HookOut(Output):
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str


class BuildOut(Output):
    status: Literal["waiting", "running", "succeeded", "failed", "cancelled"]
    hooks: list[HookOut]
    log_digest: str | None
    output_tail: str = ""


class StepOut(Output):
    step: str
    status: Literal["waiting", "running", "succeeded", "failed"]
    started_at: datetime | None
    duration: float | None
    exit_code: int | None
    output_tail: str
    log_digest: str | None = None


class ReleaseHostOut(Output):
    name: str
    status: Literal["waiting", "running", "succeeded", "failed", "rolled_back"]
    failure: str | None
    steps: list[StepOut]
    instant: str | None = Field(
        default=None,
        description="a rollback that switched at once to a directory the host held (its release id)",
    )


class PauseOut(Output):
    paused_at: datetime
    hosts_done: list[str]
    resume_at: datetime | None = Field(description="when the timer resumes it; null waits for a resume")
    resumed_by: str | None = Field(description='who resumed it ("timer" when the pause ran out)')


class ReleaseOut(Output):
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: ReleaseStatus
    requested_by: str
    requested_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    version: int = Field(description="the release's version: the number of its events")
    last_seq: int = Field(description="stream sequence of its last event; follow the WebSocket from here")
    artifact: ArtifactOut | None
    build: BuildOut
    hosts: list[ReleaseHostOut]
    links: ReleaseLinks
    pause: PauseOut | None = Field(default=None, description="the canary pause, once it happened")
    queue_position: int | None = Field(
        default=None,
        description="while queued behind another release of the environment: 1 is next in line",
    )


class StoredEventOut(Output):
    seq: int
    event: dict[str, Any] = Field(description="the event's wire JSON (see docs/events)")


class EventList(Output):
    events: list[StoredEventOut]


class ReleaseSummary(Output):
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: str
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None
    reason: str | None
    artifact_digest: str | None
    last_seq: int


class ReleaseList(Output):
    releases: list[ReleaseSummary]


class ReleaseQuery(Input):
    """Query parameters of ``GET /api/releases`` (strings on the wire, hence not strict)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    project: Slug | None = None
    environment: Slug | None = None
    status: ReleaseStatus | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
