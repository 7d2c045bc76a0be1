"""Every NATS name ferry uses, and the function building each: streams, subjects, consumers, buckets.

- ``FERRY_EVENTS`` (stream, the truth): a release's own events on ``ferry.release.<id>.release``,
  each host's on ``ferry.release.<id>.host.<host>`` (dots in host names become ``~``); releases
  recorded before that layout on ``ferry.release.<id>``.
- ``FERRY_WORK`` (work queue): ``ferry.work.build``, ``ferry.work.host.<group>.<action>``,
  ``ferry.work.timer``, ``ferry.work.webhook``; the bodies are the models of ``ferry.domain.work``.
- Request/reply: ``ferry.health.<service>``, ``ferry.builder.refs``, ``ferry.doctor.<group>``.
- Buckets: artifacts (object store), builds, environment locks, open releases (key-value).

``ferry.infra.natsauth`` grants each identity exactly these names.
"""

from __future__ import annotations

from ferry.domain.agentgroups import HOST_ACTIONS, validate_group
from ferry.domain.errors import InvalidInput
from ferry.domain.validation import RELEASE_ID_RE

# --- the events stream ---------------------------------------------------------------------
EVENTS_STREAM = "FERRY_EVENTS"
RELEASE_PREFIX = "ferry.release"
ALL_EVENTS = f"{RELEASE_PREFIX}.>"
RELEASE_LEVEL = f"{RELEASE_PREFIX}.*.release"
"""Every release's release-level subject (requested, build, pause, terminal)."""
LEGACY_RELEASE_LEVEL = f"{RELEASE_PREFIX}.*"
"""Every release's single subject before the per-host layout."""


def _rid(release_id: str) -> str:
    if not isinstance(release_id, str) or not RELEASE_ID_RE.match(release_id):
        raise InvalidInput(f"invalid release id {release_id!r}", field="release_id")
    return release_id


def host_token(host: str) -> str:
    """A host name as one subject token (host names may hold dots; they never hold ``~``)."""
    return host.replace(".", "~")


def release_subject(release_id: str) -> str:
    """The subject of a release's release-level events."""
    return f"{RELEASE_PREFIX}.{_rid(release_id)}.release"


def host_subject(release_id: str, host: str) -> str:
    """The subject of one host's events in a release."""
    return f"{RELEASE_PREFIX}.{_rid(release_id)}.host.{host_token(host)}"


def release_filter(release_id: str) -> str:
    """The wildcard holding every event a release appends in this layout."""
    return f"{RELEASE_PREFIX}.{_rid(release_id)}.>"


def legacy_subject(release_id: str) -> str:
    """The one subject a release used before the per-host layout."""
    return f"{RELEASE_PREFIX}.{_rid(release_id)}"


def release_subjects(release_id: str) -> list[str]:
    """Every subject that may hold a release's events (legacy first)."""
    return [legacy_subject(release_id), release_filter(release_id)]


def release_of(subject: str) -> str:
    """The release id of any event subject (legacy or current layout)."""
    return subject.split(".", 3)[2]


# --- the work queue --------------------------------------------------------------------------
WORK_STREAM = "FERRY_WORK"
WORK_PREFIX = "ferry.work"
ALL_WORK = f"{WORK_PREFIX}.>"
BUILD_WORK = f"{WORK_PREFIX}.build"
TIMER_WORK = f"{WORK_PREFIX}.timer"
WEBHOOK_WORK = f"{WORK_PREFIX}.webhook"
ANY_HOST_WORK = f"{WORK_PREFIX}.host.>"
LEGACY_HOST_WORK = tuple(f"{WORK_PREFIX}.host.{action}" for action in HOST_ACTIONS)
"""Host work queued before agent groups (``ferry.work.host.deploy`` / ``.rollback``)."""


def host_work(group: str, action: str) -> str:
    """Where one host action for the hosts of ``group`` is queued."""
    if action not in HOST_ACTIONS:
        raise ValueError(f"unknown host action {action!r}")
    return f"{WORK_PREFIX}.host.{validate_group(group)}.{action}"


def group_work(group: str) -> str:
    """The filter of the consumer that a group's agents share."""
    return f"{WORK_PREFIX}.host.{validate_group(group)}.>"


def action_of(subject: str) -> str:
    """The host action a work subject asks for: its last token."""
    return subject.rsplit(".", 1)[-1]


# --- durable consumers -------------------------------------------------------------------
ORCHESTRATOR = "orchestrator"
"""On the events stream: the orchestrator's reactions."""
ORCHESTRATOR_TIMER = "orchestrator-timer"
BUILDER = "builder"
WEBHOOK_ROUTER = "webhooks"
WEBHOOK_SENDER = "webhook-delivery"
LEGACY_AGENT = "agent"
"""Before agent groups every agent shared this consumer on ``ferry.work.host.>``."""


def agent_consumer(group: str) -> str:
    """The durable consumer the agents of ``group`` share."""
    return f"agent-{validate_group(group)}"


# --- request / reply -------------------------------------------------------------------------
BUILDER_REFS = "ferry.builder.refs"
BUILDER_REFS_QUEUE = "builders"
DOCTOR_PREFIX = "ferry.doctor"


def health(service: str) -> str:
    """Where a worker service answers health probes."""
    return f"ferry.health.{service}"


def doctor(group: str) -> str:
    """Where the agents of ``group`` answer drift checks (request/reply, one queue group)."""
    return f"{DOCTOR_PREFIX}.{validate_group(group)}"


def doctor_queue(group: str) -> str:
    return f"doctor-{validate_group(group)}"


# --- buckets -------------------------------------------------------------------------------
ARTIFACTS_BUCKET = "ferry-artifacts"
"""Object store: artifacts and long step logs, by sha256."""
BUILDS_BUCKET = "ferry-builds"
"""Key-value: build recipe key -> artifact digest."""
LOCKS_BUCKET = "ferry-env-locks"
"""Key-value: one release at a time per environment."""
OPEN_RELEASES_BUCKET = "ferry-open-releases"
"""Key-value: release id -> its request, for every release without a terminal event."""


def kv_stream(bucket: str) -> str:
    """The stream behind a key-value bucket."""
    return f"KV_{bucket}"


def kv_subjects(bucket: str) -> str:
    return f"$KV.{bucket}.>"


def object_stream(bucket: str) -> str:
    """The stream behind an object store bucket."""
    return f"OBJ_{bucket}"


def object_subjects(bucket: str) -> str:
    return f"$O.{bucket}.>"
