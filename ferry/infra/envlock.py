"""One release at a time per project + environment: a lock with a queue, in a JetStream KV entry.

The entry (key ``<project>.<environment>`` in bucket ``ferry-env-locks``) holds the release
that holds the environment, the releases waiting their turn in request order, and a fencing
``token`` that grows every time the lock changes hands. Every change is a compare-and-set on
the entry's revision, so any number of gateways and orchestrators may race on it. Work items
carry the token they were scheduled under; a builder or agent refuses work whose token is
older than the entry's (the lock was force-released, or moved on).

The transitions (``joined``, ``left``, ``forced``) are pure functions of the entry; ``EnvLocks``
applies them with compare-and-set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ferry.domain.errors import Conflict, StoreUnavailable
from ferry.domain.events import utcnow
from ferry.infra import metrics

BUCKET = "ferry-env-locks"
ATTEMPTS = 50


class EnvironmentBusy(Conflict):
    """Another release holds the environment and it refuses to queue (``on_busy: reject``)."""

    code = "ENVIRONMENT_BUSY"


@dataclass(frozen=True)
class Waiting:
    release_id: str
    since: str
    """ISO time it joined (a release that never got its first event is dropped after a grace)."""


@dataclass(frozen=True)
class EnvLock:
    project: str
    environment: str
    holder: str | None = None
    since: str | None = None
    """When the holder took the lock (ISO time)."""
    token: int = 0
    queue: tuple[Waiting, ...] = ()
    revision: int = field(default=0, compare=False)

    def position(self, release_id: str) -> int | None:
        """0 for the holder, 1.. for a waiting release, None for a stranger."""
        if self.holder == release_id:
            return 0
        for i, w in enumerate(self.queue):
            if w.release_id == release_id:
                return i + 1
        return None

    @property
    def waiting(self) -> list[str]:
        return [w.release_id for w in self.queue]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "since": self.since,
                "token": self.token,
                "queue": [{"id": w.release_id, "since": w.since} for w in self.queue],
            }
        ).encode()


def key(project: str, environment: str) -> str:
    return f"{project}.{environment}"


def parse(project: str, environment: str, data: bytes, revision: int) -> EnvLock:
    raw = json.loads(data or b"{}")
    queue = tuple(Waiting(str(w["id"]), str(w.get("since", ""))) for w in raw.get("queue", []))
    return EnvLock(
        project, environment, raw.get("holder"), raw.get("since"), int(raw.get("token", 0)), queue, revision
    )


# --- transitions (pure) ---------------------------------------------------------------
def joined(lock: EnvLock, release_id: str, now: datetime, *, reject_if_busy: bool = False) -> EnvLock:
    """``release_id`` holds the lock if it is free, else waits at the end of the queue."""
    if lock.position(release_id) is not None:
        return lock
    if lock.holder is None:
        return replace(lock, holder=release_id, since=now.isoformat(), token=lock.token + 1)
    if reject_if_busy:
        raise EnvironmentBusy(
            f"release {lock.holder} is running on {lock.project}/{lock.environment} "
            "(the environment rejects a second release while one runs)",
            field="environment",
        )
    return replace(lock, queue=(*lock.queue, Waiting(release_id, now.isoformat())))


def left(lock: EnvLock, release_id: str, now: datetime) -> EnvLock:
    """``release_id`` is done (or gone): it leaves the queue, or hands the lock to the next in line."""
    if lock.holder == release_id:
        return _promote(replace(lock, holder=None, since=None), now)
    if any(w.release_id == release_id for w in lock.queue):
        return replace(lock, queue=tuple(w for w in lock.queue if w.release_id != release_id))
    return lock


def forced(lock: EnvLock, now: datetime) -> EnvLock:
    """An admin took the lock from its holder: the next in line gets it, with a newer token."""
    return _promote(replace(lock, holder=None, since=None, token=lock.token + 1), now)


def _promote(lock: EnvLock, now: datetime) -> EnvLock:
    if not lock.queue:
        return lock
    first, *rest = lock.queue
    return replace(
        lock, holder=first.release_id, since=now.isoformat(), token=lock.token + 1, queue=tuple(rest)
    )


def _observe_wait(before: EnvLock, after: EnvLock) -> None:
    """``after.holder`` just took the lock: how long it queued for it (0: the lock was free)."""
    if after.holder is None or after.holder == before.holder:
        return
    since = next((w.since for w in before.queue if w.release_id == after.holder), None)
    waited = 0.0
    if since:
        try:
            waited = (utcnow() - datetime.fromisoformat(since)).total_seconds()
        except ValueError:
            pass
    metrics.LOCK_WAIT_SECONDS.observe(max(waited, 0.0))


# --- the KV adapter ---------------------------------------------------------------------
class EnvLocks:
    def __init__(self, js: JetStreamContext, *, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self.js.create_key_value(bucket=BUCKET, history=5, replicas=self.replicas)
        return self._kv

    async def get(self, project: str, environment: str) -> EnvLock:
        kv = await self.kv()
        try:
            entry = await kv.get(key(project, environment))
        except nats.js.errors.KeyNotFoundError:
            return EnvLock(project, environment)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreUnavailable("the lock store did not answer") from exc
        return parse(project, environment, entry.value or b"", entry.revision or 0)

    async def all(self) -> list[EnvLock]:
        """Every environment's entry. The keys come from the stream's subject list: listing them
        through ``KeyValue.keys()`` would create a consumer on every call."""
        await self.kv()
        prefix = f"$KV.{BUCKET}."
        info = await self.js.stream_info(f"KV_{BUCKET}", subjects_filter=f"{prefix}>")
        keys = [subject.removeprefix(prefix) for subject in (info.state.subjects or {})]
        locks = []
        for k in keys:
            project, _, environment = k.partition(".")
            locks.append(await self.get(project, environment))
        return locks

    async def change(
        self, project: str, environment: str, fn: Callable[[EnvLock], EnvLock]
    ) -> tuple[EnvLock, EnvLock]:
        """Apply ``fn`` with compare-and-set until it sticks; returns (before, after)."""
        kv = await self.kv()
        k = key(project, environment)
        for _ in range(ATTEMPTS):
            before = await self.get(project, environment)
            after = fn(before)
            if after == before:
                return before, before
            try:
                if before.revision == 0:
                    revision = await kv.create(k, after.to_json())
                else:
                    revision = await kv.update(k, after.to_json(), last=before.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else changed it: apply fn to what they wrote
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                raise StoreUnavailable("the lock store did not answer") from exc
            _observe_wait(before, after)
            return before, replace(after, revision=revision)
        raise StoreUnavailable(f"the lock of {k} kept changing")

    async def join(
        self, project: str, environment: str, release_id: str, *, reject_if_busy: bool = False
    ) -> EnvLock:
        return (
            await self.change(
                project,
                environment,
                lambda lock: joined(lock, release_id, utcnow(), reject_if_busy=reject_if_busy),
            )
        )[1]

    async def leave(self, project: str, environment: str, release_id: str) -> tuple[EnvLock, EnvLock]:
        return await self.change(project, environment, lambda lock: left(lock, release_id, utcnow()))

    async def force(self, project: str, environment: str, holder: str) -> tuple[EnvLock, EnvLock]:
        """Take the lock from ``holder`` (no-op if it moved on meanwhile)."""
        return await self.change(
            project, environment, lambda lock: forced(lock, utcnow()) if lock.holder == holder else lock
        )

    async def refusal(self, project: str, environment: str, release_id: str, token: object) -> str | None:
        """Why work scheduled under ``token`` must not run now (None: it may).

        Work queued before the lock existed carries no token and is let through.
        """
        if not isinstance(token, int) or isinstance(token, bool):
            return None
        lock = await self.get(project, environment)
        if lock.holder != release_id or lock.token > token:
            holder = lock.holder or "nobody"
            return (
                f"stale work for {release_id}: {project}/{environment} is held by {holder} "
                f"(lock token {lock.token}, work token {token})"
            )
        return None
