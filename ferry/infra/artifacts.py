"""Artifacts in the JetStream Object Store, addressed by the sha256 of their bytes."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from ferry.domain.errors import ArtifactNotFound, InvalidInput
from ferry.infra import directget

ARTIFACTS_BUCKET = "ferry-artifacts"
CHUNK = 1024 * 1024
CHUNKS_PER_READ = 64
"""Object chunks (128 KiB each by default) per direct-get round trip: 8 MiB a request."""
STREAM_CHUNKS_PER_READ = 8
"""For streamed reads (a response body): 1 MiB a request, so a reader holds little at a time."""


@dataclass(frozen=True)
class ArtifactStream:
    size: int
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class StoredArtifact:
    digest: str
    size: int
    stored: bool
    """False when the store already held these bytes and nothing new was written."""


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"not a sha256 digest: {digest!r}", field="digest")
    return digest


class ArtifactStore:
    def __init__(self, js: JetStreamContext, *, bucket: str = ARTIFACTS_BUCKET, replicas: int = 1) -> None:
        self.js = js
        self.bucket = bucket
        self.replicas = replicas
        self._os: ObjectStore | None = None

    async def setup(self) -> None:
        try:
            self._os = await self.js.object_store(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            self._os = await self.js.create_object_store(
                self.bucket,
                config=api.ObjectStoreConfig(storage=api.StorageType.FILE, replicas=self.replicas),
            )

    @property
    def os(self) -> ObjectStore:
        if self._os is None:
            raise RuntimeError("ArtifactStore.setup() was not awaited")
        return self._os

    async def exists(self, digest: str) -> int | None:
        """The stored size, or None when absent."""
        try:
            info = await self.os.get_info(_check_digest(digest))
        except nats.js.errors.ObjectNotFoundError:
            return None
        except nats.js.errors.NotFoundError:
            return None
        return int(info.size or 0)

    async def put_file(self, path: Path) -> StoredArtifact:
        """Store a file under its sha256; a second put of the same bytes stores nothing new."""
        digest, size = await asyncio.to_thread(sha256_file, path)
        if await self.exists(digest) is not None:
            return StoredArtifact(digest, size, stored=False)
        with open(path, "rb") as f:
            await self.os.put(digest, f)  # streams in chunks from a worker thread
        return StoredArtifact(digest, size, stored=True)

    async def put_bytes(self, data: bytes) -> StoredArtifact:
        digest = hashlib.sha256(data).hexdigest()
        if await self.exists(digest) is not None:
            return StoredArtifact(digest, len(data), stored=False)
        await self.os.put(digest, io.BytesIO(data))
        return StoredArtifact(digest, len(data), stored=True)

    async def get_into(self, digest: str, out: BinaryIO) -> int:
        """Stream the artifact into ``out`` chunk by chunk; verifies the digest on the way.

        The chunks are read with batched direct gets (``ferry.infra.directget``): about 4x faster here
        than the object store's ordered consumer, and nothing is created on the server.
        """
        try:
            info = await self.os.get_info(_check_digest(digest))
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
            raise ArtifactNotFound(f"artifact {digest} not found", field="digest") from None
        h = hashlib.sha256()
        size = 0
        chunks = f"$O.{self.bucket}.C.{info.nuid}"
        stream = f"OBJ_{self.bucket}"
        async for msg in directget.messages(
            self.js._nc, stream, chunks, 1, CHUNKS_PER_READ, what="artifact store"
        ):
            h.update(msg.data)
            size += len(msg.data)
            out.write(msg.data)
        if size != int(info.size or 0) or h.hexdigest() != digest:
            raise ArtifactNotFound(f"artifact {digest} is corrupt in the store", field="digest")
        return size

    async def open_stream(self, digest: str, *, per_read: int = STREAM_CHUNKS_PER_READ) -> ArtifactStream:
        """The artifact's size and its bytes as an async iterator of chunks, for a response body.

        A missing artifact raises here, before any byte is sent. At most ``per_read`` chunks
        (128 KiB each by default) are in memory at a time; the digest is checked at the end, and
        a corrupt artifact stops the stream with ``ArtifactNotFound`` (the client sees a cut body).
        """
        try:
            info = await self.os.get_info(_check_digest(digest))
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
            raise ArtifactNotFound(f"artifact {digest} not found", field="digest") from None
        size = int(info.size or 0)

        async def chunks() -> AsyncIterator[bytes]:
            h = hashlib.sha256()
            seen = 0
            subject = f"$O.{self.bucket}.C.{info.nuid}"
            async for msg in directget.messages(
                self.js._nc, f"OBJ_{self.bucket}", subject, 1, per_read, what="artifact store"
            ):
                h.update(msg.data)
                seen += len(msg.data)
                yield msg.data
            if seen != size or h.hexdigest() != digest:
                raise ArtifactNotFound(f"artifact {digest} is corrupt in the store", field="digest")

        return ArtifactStream(size, chunks())

    async def get_file(self, digest: str, path: Path) -> int:
        """Download to ``path`` (written to a temp name, then renamed)."""
        tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            size = await self.get_into(digest, f)
        tmp.replace(path)
        return size

    async def get_bytes(self, digest: str) -> bytes:
        buf = io.BytesIO()
        await self.get_into(digest, buf)
        return buf.getvalue()
