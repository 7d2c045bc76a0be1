"""The commands a release accepts: what a user or a service asks of it (``decide`` answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ferry.domain.events import Plan


@dataclass(frozen=True)
class RequestRelease:
    project: str
    environment: str
    ref: str
    requested_by: str
    plan: Plan


@dataclass(frozen=True)
class Approve:
    by: str


@dataclass(frozen=True)
class Reject:
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Cancel:
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Pause:
    """Hold the rollout after the canary batch (the rollout policy asks for it)."""

    reason: str = "canary batch succeeded"


@dataclass(frozen=True)
class Resume:
    """Go on after a pause: ``by`` a user, or ``TIMER`` once ``resume_at`` has passed."""

    by: str


TIMER = "timer"


@dataclass(frozen=True)
class StartBuild:
    builder: str = ""


@dataclass(frozen=True)
class RecordSource:
    commit: str
    duration: float = 0.0


@dataclass(frozen=True)
class RecordHook:
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str = ""


@dataclass(frozen=True)
class RecordArtifact:
    digest: str
    size: int
    format: Literal["zst", "gz", "none"]
    reused: bool = False
    log_digest: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class FailBuild:
    stage: Literal["fetch", "hooks", "package"]
    reason: str
    output_tail: str = ""
    log_digest: str | None = None


@dataclass(frozen=True)
class StartHostStep:
    host: str
    step: str
    agent: str = ""


@dataclass(frozen=True)
class FinishHostStep:
    host: str
    step: str
    exit_code: int
    duration: float
    output_tail: str = ""
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FailHost:
    host: str
    step: str
    reason: str
    code: str = "STEP_FAILED"


@dataclass(frozen=True)
class RollBackHost:
    host: str
    to_release: str | None
    output_tail: str = ""
    healthy: bool | None = None


@dataclass(frozen=True)
class Succeed:
    pass


@dataclass(frozen=True)
class Unlock:
    """An admin takes the environment from this release: it ends as failed, whatever runs.

    Hosts in flight stop at their next step; none starts or switches after this event.
    """

    by: str
    reason: str


@dataclass(frozen=True)
class Fail:
    reason: str


Command = (
    RequestRelease
    | Approve
    | Reject
    | Cancel
    | Pause
    | Resume
    | StartBuild
    | RecordSource
    | RecordHook
    | RecordArtifact
    | FailBuild
    | StartHostStep
    | FinishHostStep
    | FailHost
    | RollBackHost
    | Succeed
    | Fail
    | Unlock
)
