"""The agent's own artifact cache (``FERRY_HOME/agent-cache/<agent>``): what the object store lost, it loses.

An artifact the garbage collection removed from the object store belongs to no kept release
(``ferry.infra.gc``), so no release will send it again; its local copy and manifest go at the
agent's next sweep (every ``FERRY_GC_INTERVAL`` seconds). Partial downloads (``*.part``) and
anything not named after a digest are left alone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ferry.domain.validation import DIGEST_RE
from ferry.infra.artifacts import ArtifactStore

log = logging.getLogger("ferry.agent.cache")
MANIFEST = ".manifest.gz"


def _cached(cache_dir: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in cache_dir.iterdir() if cache_dir.is_dir() else []:
        digest = path.name.removesuffix(MANIFEST)
        if DIGEST_RE.match(digest) and path.is_file():
            found.setdefault(digest, []).append(path)
    return found


async def sweep(cache_dir: Path, artifacts: ArtifactStore) -> list[str]:
    """Remove the cached artifacts (and manifests) the object store no longer holds; their digests."""
    cached = await asyncio.to_thread(_cached, cache_dir)
    gone = [digest for digest in sorted(cached) if await artifacts.exists(digest) is None]
    freed = 0
    for digest in gone:
        for path in cached[digest]:
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
    if gone:
        log.info("agent cache sweep", extra={"removed": len(gone), "bytes_freed": freed})
    return gone


async def loop(cache_dir: Path, artifacts: ArtifactStore, stop: asyncio.Event, every: float) -> None:
    """Sweep every ``every`` seconds until ``stop`` (0: never); run it under ``worker.supervise``."""
    if every <= 0:
        await stop.wait()
        return
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            await sweep(cache_dir, artifacts)
