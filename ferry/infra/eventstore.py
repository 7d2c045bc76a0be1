"""The one door to JetStream for release events.

Layout (one stream, ``FERRY_EVENTS``):

- ``ferry.release.<id>.release``: the release-level events (requested, build, pause, terminal);
- ``ferry.release.<id>.host.<host>``: one host's events (steps, failure, rollback);
- ``ferry.release.<id>``: the single subject of releases recorded before this layout (read,
  never written: a release that was running at the upgrade carries on in the new layout).

A release is read as ``ferry.release.<id>.>`` (plus its legacy subject), in stream order.
Appends are guarded with ``Nats-Expected-Last-Subject-Sequence``: a host's ordinary step
events against the last sequence of *its own* subject, so 100 hosts never contend for one
sequence; release-level events and the host events that gate on the release (a host's first
step, its switch) against the last sequence of the *whole release*
(``Nats-Expected-Last-Subject-Sequence-Subject: ferry.release.<id>.>``), so a cancel, a pause
or a terminal event can never interleave with a host starting or switching. A conflict
(JetStream error 10071) becomes ``ConcurrencyError``.

Reads never create a server-side consumer: they are batched direct gets
(``$JS.API.DIRECT.GET`` with ``next_by_subj`` and ``batch``), answered by any replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from ferry.domain.errors import ConcurrencyError, FerryError, InvalidInput, StoreUnavailable
from ferry.domain.events import Event, decode, host_of
from ferry.domain.validation import RELEASE_ID_RE
from ferry.infra import directget, metrics, tracing
from ferry.infra.subjects import (
    ALL_EVENTS,
    EVENTS_STREAM,
    RELEASE_PREFIX,
    host_subject,
    host_token,
    legacy_subject,
    release_filter,
    release_of,
    release_subject,
    release_subjects,
)

SUBJECT_PREFIX = RELEASE_PREFIX
WRONG_LAST_SEQUENCE = 10071
RELEASE_ID = RELEASE_ID_RE
BATCH = 256
READ_TIMEOUT = 5.0


class TypeNotAllowed(FerryError):
    """This process's NATS identity may not append this event type (see ``ferry.infra.natsauth``)."""

    code = "TYPE_NOT_ALLOWED"


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: Event
    subject: str = ""


__all__ = [  # the subject layout lives in ferry.infra.subjects; its names stay importable here
    "ALL_EVENTS",
    "EVENTS_STREAM",
    "RELEASE_ID",
    "SUBJECT_PREFIX",
    "EventStore",
    "StoredEvent",
    "TypeNotAllowed",
    "subject_of",
    "host_subject",
    "host_token",
    "legacy_subject",
    "release_filter",
    "release_of",
    "release_subject",
    "release_subjects",
]


def subject_of(event: Event) -> str:
    """Where ``event`` is appended: its host's subject, or the release's."""
    host = host_of(event)
    return release_subject(event.release_id) if host is None else host_subject(event.release_id, host)


class EventStore:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str = EVENTS_STREAM,
        replicas: int = 1,
        allowed_types: frozenset[str] | None = None,
        identity: str = "",
    ) -> None:
        self.js = js
        self.stream = stream
        self.replicas = replicas
        self.allowed_types = allowed_types
        """The event types this process's NATS identity may append (None: any); the server's
        subject permissions say the same per subject, this says it per type."""
        self.identity = identity

    @property
    def nc(self) -> Client:
        return self.js._nc  # the JetStream context's connection (nats-py keeps it there)

    async def setup(self) -> None:
        """Create or update the events stream (idempotent)."""
        config = api.StreamConfig(
            name=self.stream,
            subjects=[ALL_EVENTS],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=120.0,
            allow_direct=True,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def append(self, events: Sequence[Event], *, expected_seq: int, whole_release: bool) -> list[int]:
        """Append ``events`` (one release; each to ``subject_of`` it) in order; returns their sequences.

        ``expected_seq`` is the last stream sequence the writer saw: of the whole release when
        ``whole_release``, else of the (single) subject the events go to. Each further event
        is chained on the sequence of the one before it.
        """
        if not events:
            return []
        if self.allowed_types is not None:
            refused = sorted({e.type for e in events} - self.allowed_types)
            if refused:
                raise TypeNotAllowed(
                    f"the {self.identity or 'this'} identity may not append {', '.join(refused)}"
                )
        release_id = events[0].release_id
        subjects = {subject_of(e) for e in events}
        if any(e.release_id != release_id for e in events) or (not whole_release and len(subjects) > 1):
            raise InvalidInput("one append writes one release (and one subject unless whole_release)")
        seqs: list[int] = []
        last = expected_seq
        for event in events:
            subject = subject_of(event)
            payload = event.to_json()
            # The id covers the bytes: a retried append of the same event is de-duplicated,
            # while a different writer's event for the same version still meets the sequence check.
            msg_id = f"{subject}:{event.version}:{hashlib.sha256(payload).hexdigest()[:16]}"
            headers = {
                "Nats-Expected-Last-Subject-Sequence": str(last),
                "Nats-Msg-Id": msg_id,
                "Ferry-Type": event.type,
                "Ferry-Version": str(event.version),
            }
            if whole_release:
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = release_filter(release_id)
            tracing.inject(headers)  # the release's trace (traceparent): a header, outside the signed body
            try:
                with metrics.timed(metrics.APPEND_SECONDS):
                    ack = await self.js.publish(subject, payload, stream=self.stream, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    metrics.APPEND_CONFLICTS.inc()
                    raise ConcurrencyError(
                        f"release {release_id} changed while appending {event.type} v{event.version}"
                    ) from exc
                raise StoreUnavailable(f"event store refused the append: {exc.description}") from exc
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.NoStreamResponseError,  # the stream has no leader (a failover)
            ) as exc:
                raise StoreUnavailable("event store did not answer") from exc
            last = ack.seq
            seqs.append(ack.seq)
        return seqs

    async def load(self, release_id: str, after: int = 0, *, legacy: bool = True) -> list[StoredEvent]:
        """A release's events with stream sequence > ``after``, in stream order (both layouts)."""
        current = await self.read_batch(release_filter(release_id), after + 1)
        if not legacy:
            return current
        old = await self.read_batch(legacy_subject(release_id), after + 1)
        if not old:
            return current
        return sorted(old + current, key=lambda s: s.seq)

    async def subject_counts(self, release_id: str) -> dict[str, int]:
        """How many events each of a release's subjects (this layout) holds: one lookup in the
        stream's subject index, whatever the length of the history around it."""
        try:
            info = await self.js.stream_info(self.stream, subjects_filter=release_filter(release_id))
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreUnavailable("event store did not answer") from exc
        return {subject: int(n) for subject, n in (info.state.subjects or {}).items()}

    async def read(self, subject: str, from_seq: int = 1) -> AsyncIterator[StoredEvent]:
        """Every event on ``subject`` (wildcards allowed) from ``from_seq`` up to now, then stop."""
        async for msg in directget.messages(
            self.nc, self.stream, subject, from_seq, BATCH, what="event store"
        ):
            yield _stored(msg)

    async def read_batch(self, subject: str, from_seq: int = 1) -> list[StoredEvent]:
        with metrics.timed(metrics.READ_SECONDS):
            return [s async for s in self.read(subject, from_seq)]

    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def follow(self, subject: str = ALL_EVENTS, from_seq: int = 1) -> AsyncIterator[StoredEvent]:
        """Every event on ``subject`` from ``from_seq``, then live ones, forever (ordered consumer)."""
        sub = await self.js.subscribe(
            subject,
            stream=self.stream,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=max(from_seq, 1)),
        )
        try:
            async for msg in sub.messages:
                yield StoredEvent(msg.metadata.sequence.stream, decode(msg.data), msg.subject)
        finally:
            await sub.unsubscribe()


def _stored(msg: Msg) -> StoredEvent:
    headers = msg.headers or {}
    return StoredEvent(int(headers["Nats-Sequence"]), decode(msg.data), headers.get("Nats-Subject", ""))
