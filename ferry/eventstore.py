"""The one door to JetStream for release events.

One stream, one subject per release (``ferry.release.<id>``). Appends are guarded
by ``Nats-Expected-Last-Subject-Sequence`` so two writers never interleave a
release's history; a conflict (JetStream error 10071) becomes ``ConcurrencyError``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from ferry.errors import ConcurrencyError, InvalidInput, StoreUnavailable
from ferry.events import Event, decode

EVENTS_STREAM = "FERRY_EVENTS"
SUBJECT_PREFIX = "ferry.release"
WRONG_LAST_SEQUENCE = 10071
RELEASE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: Event


def subject_for(release_id: str) -> str:
    if not RELEASE_ID.match(release_id):
        raise InvalidInput(f"invalid release id {release_id!r}", field="release_id")
    return f"{SUBJECT_PREFIX}.{release_id}"


def release_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


class EventStore:
    def __init__(self, js: JetStreamContext, *, stream: str = EVENTS_STREAM, replicas: int = 1) -> None:
        self.js = js
        self.stream = stream
        self.replicas = replicas

    async def setup(self) -> None:
        """Create or update the events stream (idempotent)."""
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{SUBJECT_PREFIX}.>"],
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

    async def append(self, release_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append ``events`` if the release is at ``expected_version``; returns the last stream sequence."""
        subject = subject_for(release_id)
        last_seq, last_version = await self._last(subject)
        if last_version != expected_version:
            raise ConcurrencyError(
                f"release {release_id} is at version {last_version}, expected {expected_version}"
            )
        for i, event in enumerate(events):
            if event.release_id != release_id or event.version != expected_version + i + 1:
                raise InvalidInput(f"event {event.type} has version {event.version}, not the next one")
            payload = event.to_json()
            # The id covers the bytes: a retried append of the same event is de-duplicated,
            # while a different writer's event for the same version still meets the sequence check.
            msg_id = f"{release_id}:{event.version}:{hashlib.sha256(payload).hexdigest()[:16]}"
            headers = {
                "Nats-Expected-Last-Subject-Sequence": str(last_seq),
                "Nats-Msg-Id": msg_id,
                "Ferry-Type": event.type,
                "Ferry-Version": str(event.version),
            }
            try:
                ack = await self.js.publish(subject, payload, stream=self.stream, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConcurrencyError(
                        f"release {release_id} changed while appending version {event.version}"
                    ) from exc
                raise StoreUnavailable(f"event store refused the append: {exc.description}") from exc
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                raise StoreUnavailable("event store did not answer") from exc
            last_seq = ack.seq
        return last_seq

    async def _last(self, subject: str) -> tuple[int, int]:
        try:
            msg = await self.js.get_last_msg(self.stream, subject)
        except nats.js.errors.NotFoundError:
            return 0, 0
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreUnavailable("event store did not answer") from exc
        version = (msg.headers or {}).get("Ferry-Version")
        if version is None:
            version = str(decode(msg.data or b"").version)
        return int(msg.seq or 0), int(version)

    async def version(self, release_id: str) -> int:
        return (await self._last(subject_for(release_id)))[1]

    async def load(self, release_id: str) -> list[StoredEvent]:
        """The release's whole history, in order, with stream sequences."""
        return [e async for e in self.read(subject_for(release_id))]

    async def read(self, subject: str, from_seq: int = 1) -> AsyncIterator[StoredEvent]:
        """Every event on ``subject`` (wildcards allowed) from ``from_seq`` up to now, then stop."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(from_seq, 1),
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        sub = await self.js.pull_subscribe(subject, stream=self.stream, config=config)
        try:
            pending = (await sub.consumer_info()).num_pending or 0
            while pending > 0:
                msgs = await sub.fetch(min(pending, 256), timeout=5)
                for msg in msgs:
                    yield StoredEvent(msg.metadata.sequence.stream, decode(msg.data))
                pending = msgs[-1].metadata.num_pending if msgs else 0
        finally:
            await sub.unsubscribe()

    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def follow(
        self, subject: str = f"{SUBJECT_PREFIX}.>", from_seq: int = 1
    ) -> AsyncIterator[StoredEvent]:
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
                yield StoredEvent(msg.metadata.sequence.stream, decode(msg.data))
        finally:
            await sub.unsubscribe()
