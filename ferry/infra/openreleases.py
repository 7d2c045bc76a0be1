"""The index of unfinished releases: what the reconciler walks, so its cost follows the open work.

A key-value bucket (``ferry-open-releases``) holds one key per release that has been requested
and has no terminal event yet. The orchestrator adds a release when it sees its
``release.requested`` and removes it when it sees a terminal event (both idempotent: a
redelivered event repeats a put or a purge). A removal purges the key's subject from the
bucket's stream, leaving no delete marker behind, so the bucket holds only open releases
however long the history grows; listing it is one stream-info request (no consumer is created).

An installation upgraded from a version without the index (or whose bucket was lost) has no
bucket: the gateway creates it and fills it once from the events stream (``rebuild``), then
marks it rebuilt. A release the rebuild saw open and that ended meanwhile is dropped by the
reconciler, which checks each release's state anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ferry.domain.errors import StoreUnavailable
from ferry.domain.events import EVENT_TYPES
from ferry.domain.validation import RELEASE_ID_RE
from ferry.infra import subjects

log = logging.getLogger("ferry.infra.openreleases")

BUCKET = subjects.OPEN_RELEASES_BUCKET
REBUILT = "_meta.rebuilt"
"""Written once the rebuild from the stream is complete (release ids never hold a dot)."""
TERMINAL_TYPES: frozenset[str] = frozenset(t.model_fields["type"].default for t in EVENT_TYPES if t.TERMINAL)
REQUESTED = "release.requested"

Scan = Callable[[], Awaitable[list[str]]]


async def scan_stream(js: JetStreamContext) -> list[str]:
    """Releases whose release-level subject does not end with a terminal event, read from the
    whole events stream: one last-message read per release ever recorded (the rebuild only)."""
    release_ids: dict[str, str] = {}
    for pattern in (subjects.LEGACY_RELEASE_LEVEL, subjects.RELEASE_LEVEL):  # the current layout wins
        info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=pattern)
        for subject in (info.state.subjects or {}).keys():
            release_ids[subjects.release_of(subject)] = subject
    found = []
    for rid, subject in release_ids.items():
        last = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
        if (last.headers or {}).get("Ferry-Type", "") not in TERMINAL_TYPES:
            found.append(rid)
    return sorted(found)


class OpenReleases:
    def __init__(self, js: JetStreamContext, *, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(BUCKET)
        return self._kv

    async def setup(self, scan: Scan) -> int:
        """Create the bucket if it is missing and fill it from ``scan`` (the stream) until that
        is done once; returns the releases the rebuild added (0 when nothing was to do)."""
        try:
            kv = await self.kv()
        except nats.js.errors.BucketNotFoundError:
            kv = self._kv = await self.js.create_key_value(bucket=BUCKET, history=1, replicas=self.replicas)
        try:
            await kv.get(REBUILT)
            return 0
        except nats.js.errors.KeyNotFoundError:
            pass
        found = await scan()
        for release_id in found:
            await kv.put(release_id, b"")
        await kv.put(REBUILT, str(len(found)).encode())
        log.info("rebuilt the index of unfinished releases from the stream", extra={"count": len(found)})
        return len(found)

    async def add(self, release_id: str) -> None:
        try:
            await (await self.kv()).put(release_id, b"")
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreUnavailable("the open-releases index did not answer") from exc

    async def remove(self, release_id: str) -> None:
        """Drop the release's key and its history (a purge of its subject: no marker stays)."""
        await self.kv()
        try:
            await self.js.purge_stream(subjects.kv_stream(BUCKET), subject=f"$KV.{BUCKET}.{release_id}")
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreUnavailable("the open-releases index did not answer") from exc

    async def ids(self) -> list[str]:
        """Every open release id: the bucket's subjects, read in one request (no consumer)."""
        await self.kv()
        prefix = f"$KV.{BUCKET}."
        info = await self.js.stream_info(subjects.kv_stream(BUCKET), subjects_filter=f"{prefix}>")
        keys = (subject.removeprefix(prefix) for subject in (info.state.subjects or {}))
        return sorted(k for k in keys if RELEASE_ID_RE.match(k))

    async def note(self, release_id: str, event_type: str) -> None:
        """Keep the index in step with one event of the release (idempotent)."""
        if event_type == REQUESTED:
            await self.add(release_id)
        elif event_type in TERMINAL_TYPES:
            await self.remove(release_id)
