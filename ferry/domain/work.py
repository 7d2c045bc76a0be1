"""Work messages: what the orchestrator asks builder and agents to do, one model per kind.

A work item's body is ``canonical()`` JSON (sorted keys, no spaces), so the same item is always
the same bytes: the gateway signs subject, message id and these bytes (``ferry.infra.signing``).
Consumers read a body with ``parse``; anything that is not the kind's shape is
``MalformedWork``, which the consumer loop terminates (a typed refusal, never a redelivery loop).
Unknown fields are ignored, so an older worker reads the work of a newer gateway.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferry.domain.errors import FerryError
from ferry.domain.validation import RELEASE_ID_PATTERN

ReleaseId = Annotated[str, Field(pattern=RELEASE_ID_PATTERN)]
HostName = Annotated[str, Field(min_length=1, max_length=253)]
LockToken = Annotated[int | None, Field(strict=True)]
"""The environment lock's token the work was scheduled under (None: queued before locks)."""


class MalformedWork(FerryError):
    """A work item (or request) that is not the shape of its kind: refused, nothing runs."""

    code = "MALFORMED_WORK"


def canonical(data: Any) -> bytes:
    """The one byte form of a message body: sorted keys, no insignificant spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Message(BaseModel):
    """A message body between services: frozen, canonical bytes, a typed refusal for bad input."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    what: ClassVar[str] = "message"

    def canonical(self) -> bytes:
        return canonical(self.model_dump(mode="json"))

    @classmethod
    def parse(cls, data: bytes | str) -> Self:
        """The message in ``data``; ``MalformedWork`` naming the first bad field otherwise."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise MalformedWork(f"malformed {cls.what}: {where}: {first['msg']}", field=where) from None


class WorkItem(Message):
    """An item on the work queue; ``msg_id`` de-duplicates it (``Nats-Msg-Id``)."""

    what: ClassVar[str] = "work"

    @property
    def msg_id(self) -> str:
        raise NotImplementedError


class Work(WorkItem):
    """Work on one release (what the orchestrator asks builder and agents for)."""

    release_id: ReleaseId


class BuildWork(Work):
    """``ferry.work.build``: fetch, build and package the release's artifact."""

    what: ClassVar[str] = "build work"
    lock: LockToken = None

    @property
    def msg_id(self) -> str:
        return f"build:{self.release_id}"


class HostWork(Work):
    """``ferry.work.host.<group>.<action>``: one host's part of a release."""

    action: ClassVar[Literal["deploy", "rollback"]]
    host: HostName
    lock: LockToken = None

    @property
    def msg_id(self) -> str:
        return f"{self.action}:{self.release_id}:{self.host}"


class DeployWork(HostWork):
    """Run the host's steps (upload ... post-release hook)."""

    action: ClassVar[Literal["deploy", "rollback"]] = "deploy"
    what: ClassVar[str] = "deploy work"


class RollbackWork(HostWork):
    """Switch a host the failed rollout had activated back to its previous release."""

    action: ClassVar[Literal["deploy", "rollback"]] = "rollback"
    what: ClassVar[str] = "rollback work"


HOST_WORK: dict[str, type[HostWork]] = {w.action: w for w in (DeployWork, RollbackWork)}
"""Host work by action, the last token of its subject."""


class TimerWork(Work):
    """``ferry.work.timer``: resume a paused release once ``at`` has passed."""

    what: ClassVar[str] = "timer work"
    at: datetime
    version: int = 0
    """The release's version when the pause was scheduled: one item per pause."""

    @property
    def msg_id(self) -> str:
        return f"timer:{self.release_id}:{self.version}"


class WebhookWork(WorkItem):
    """``ferry.work.webhook``: post one event to one webhook (the notifier routes, then delivers)."""

    what: ClassVar[str] = "webhook work"
    webhook: int
    seq: Annotated[int, Field(ge=1)]
    """The event's stream sequence: with the webhook, what makes a delivery idempotent."""
    event: dict[str, Any]
    """The event's wire JSON (``ferry.domain.events.decode`` reads it)."""
    release: dict[str, str]
    """What the message says about the release (``ferry.domain.webhooks.ReleaseInfo``)."""

    @property
    def msg_id(self) -> str:
        return f"webhook:{self.webhook}:{self.seq}"


class DoctorRequest(Message):
    """``ferry.doctor.<group>``: where ``current`` points on these hosts (nothing is changed)."""

    what: ClassVar[str] = "doctor request"
    deploy_path: Annotated[str, Field(min_length=1)]
    hosts: list[HostName]


class HostLive(Message):
    current: str | None
    error: str | None


class DoctorReply(Message):
    """Each host's live release, or what kept it from being read; ``error`` for a bad request."""

    what: ClassVar[str] = "doctor reply"
    hosts: dict[str, HostLive] = Field(default_factory=dict)
    error: str | None = None


class RefsRequest(Message):
    """``ferry.builder.refs``: the branches and tags of a repository (from the builder's mirror)."""

    what: ClassVar[str] = "refs request"
    repo_url: Annotated[str, Field(min_length=1)]
    credential: str | None = None
