"""Bounded logs (issue 9, item 8): the log endpoint streams from the object store.

The gateway app runs for real (lifespan, nats-server, SQLite and PostgreSQL); the log is a real
object in the JetStream object store, read back with batched direct gets a few chunks at a time.
"""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import hashlib
import os

from ferry.domain.release import RecordArtifact, RecordSource, StartBuild
from tests.integration.api_harness import Api, api, error_of
from tests.integration.test_api_releases import _advance

LOG_SIZE = 12 * 1024 * 1024 + 123


async def _release_with_log(api: Api, log_digest: str) -> str:
    s = await api.seed(hosts=1)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    rid = str((await api.ok("POST", "/api/releases", body, 202))["id"])
    art = await api.gw.bus.artifacts.put_bytes(b"artifact bytes")
    await _advance(
        api,
        rid,
        StartBuild("b1"),
        RecordSource("a" * 40, 0.1),
        RecordArtifact(art.digest, art.size, "zst", log_digest=log_digest),
    )
    return rid


async def test_a_large_log_streams_whole_and_in_small_pieces(api: Api) -> None:
    data = os.urandom(LOG_SIZE // 2).hex().encode()[:LOG_SIZE]
    log = await api.gw.bus.artifacts.put_bytes(data)
    rid = await _release_with_log(api, log.digest)

    stream = await api.gw.bus.artifacts.open_stream(log.digest)
    assert stream.size == len(data)
    largest, h = 0, hashlib.sha256()
    async for chunk in stream.chunks:  # what the response body is made of
        largest = max(largest, len(chunk))
        h.update(chunk)
    assert h.hexdigest() == log.digest and 0 < largest <= 128 * 1024  # one object chunk at a time

    async with api.client.stream("GET", f"/api/releases/{rid}/logs/{log.digest}") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["content-length"] == str(len(data))
        body = b"".join([part async for part in r.aiter_bytes()])
    assert body == data


async def test_a_log_missing_from_the_store_is_404_before_any_byte(api: Api) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    rid = await _release_with_log(api, missing)
    r = await api.get(f"/api/releases/{rid}/logs/{missing}")
    assert r.status_code == 404 and "not found" in error_of(r)["message"], r.text
