"""``ferry backup`` / ``ferry restore``: the streams, the database and the keys in one archive.

The archive (a ``.tar.gz``, mode 0600: **it holds secrets**) has:
  ``manifest.json``   when, the alembic revision, ``projection_position``, each stream's config
                      and the sequences it was read to
  ``streams/<S>.jsonl``  every message of FERRY_EVENTS, the KV buckets and the object store, with
                      its subject, sequence, headers and bytes (read by stored-message get, so no
                      consumer is created)
  ``db.json``         every table, row by row (SQLAlchemy; the same on SQLite and PostgreSQL)
  ``keys/``           the secret key file and the work-signing key pair

Consistency: the database is read first, then each stream up to its last sequence at that
moment, so the streams hold at least everything the read model covers. ``restore`` recreates the
streams and re-publishes every message in order with its subject and headers (the expected-
sequence guards dropped); when the events land on other sequences than they had, or the
database was read ahead of the streams, the read model is rebuilt by replaying the events.
FERRY_WORK (queued work) is not kept: the reconciler asks again for what unfinished releases
need.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js import api

from ferry.infra.backup.database import dump_db, keep_archived_rows, load_db, refuse_unless_empty_db
from ferry.infra.backup.errors import BackupError
from ferry.infra.backup.streams import dump_stream, load_stream, refuse_unless_empty_streams
from ferry.infra.bus import Bus
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.secrets import KEY_FILE
from ferry.infra.settings import Settings
from ferry.infra.subjects import ALL_EVENTS, WEBHOOK_ROUTER
from ferry.infra.worker import ensure_consumer

__all__ = ["BackupError", "Summary", "backup", "dump_db", "load_db", "restore"]

FORMAT = 1
STREAMS = (EVENTS_STREAM, "KV_ferry-env-locks", "KV_ferry-builds", "OBJ_ferry-artifacts")


@dataclass(frozen=True)
class Summary:
    path: Path
    messages: dict[str, int]
    rows: dict[str, int]
    keys: list[str]
    rebuilt: bool = False


# --- the keys ---------------------------------------------------------------------
def _key_files(settings: Settings) -> dict[str, Path]:
    return {
        "secret.key": settings.home / KEY_FILE,
        "work-signing.key": settings.signing_key_path,
        "work-signing.pub": settings.public_key_path,
    }


def _private_dir(parent: Path | None = None) -> Path:
    return Path(tempfile.mkdtemp(prefix="ferry-backup-", dir=parent))  # mkdtemp makes it 0700


# --- the whole --------------------------------------------------------------------
async def backup(bus: Bus, settings: Settings, dest: Path) -> Summary:
    """Write the archive to ``dest`` (0600)."""
    if await asyncio.to_thread(dest.exists):
        raise BackupError(f"{dest} exists; name a new file", field="dest")
    work = _private_dir()
    try:
        db = dump_db(settings.db_url)  # first: the streams then hold at least what it covers
        (work / "db.json").write_text(json.dumps(db))
        (work / "streams").mkdir()
        streams: dict[str, Any] = {}
        for stream in STREAMS:
            meta = await dump_stream(bus.js, stream, work / "streams" / f"{stream}.jsonl")
            if meta is not None:
                streams[stream] = meta
        (work / "keys").mkdir()
        keys = []
        for name, path in _key_files(settings).items():
            if path.is_file():
                shutil.copyfile(path, work / "keys" / name)
                keys.append(name)
        manifest = {
            "format": FORMAT,
            "at": datetime.now(UTC).isoformat(),
            "revision": db["revision"],
            "projection_position": db["position"],
            "streams": streams,
            "keys": keys,
            "secret_key_in_environment": bool(settings.secret_key),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for item in sorted(work.iterdir()):
                tar.add(item, arcname=item.name)
        return Summary(
            dest,
            {s: int(m["messages"]) for s, m in streams.items()},
            {t: len(r) for t, r in db["tables"].items()},
            keys,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unpack(src: Path) -> Path:
    if not src.is_file():
        raise BackupError(f"{src} is not a backup archive", field="src")
    work = _private_dir()
    try:
        with tarfile.open(src, mode="r:gz") as tar:
            tar.extractall(work, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise BackupError(f"{src} is not a backup archive: {exc}", field="src") from None
    if not (work / "manifest.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        raise BackupError(f"{src} has no manifest.json: not a ferry backup", field="src")
    return work


async def restore(bus: Bus, settings: Settings, src: Path, *, replicas: int = 1) -> Summary:
    """Restore the archive into an empty instance: keys, database, streams; rebuild if needed."""
    from ferry.db.engine import make_engine, session_factory
    from ferry.infra.projector import rebuild

    work = _unpack(src)
    try:
        manifest = json.loads((work / "manifest.json").read_text())
        if manifest.get("format") != FORMAT:
            raise BackupError(f"unknown backup format {manifest.get('format')!r}", field="src")
        # nothing is written before both sides are known to be empty
        await asyncio.to_thread(refuse_unless_empty_db, settings.db_url)
        await refuse_unless_empty_streams(bus.js, list(manifest["streams"]))
        keys = []
        for name, path in _key_files(settings).items():
            kept = work / "keys" / name
            if kept.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(kept.read_bytes())
                os.chmod(path, 0o600)
                keys.append(name)
        db = json.loads((work / "db.json").read_text())
        rows = load_db(settings.db_url, db)
        same = True
        messages = {}
        for stream, meta in manifest["streams"].items():
            in_place = await load_stream(bus.js, stream, meta, work / "streams" / f"{stream}.jsonl", replicas)
            same = same and (in_place or stream != EVENTS_STREAM)  # only the events' sequences matter
            messages[stream] = int(meta["messages"])
        # the old instance delivered the history's webhooks: the router starts after it
        await ensure_consumer(
            bus.js, EVENTS_STREAM, WEBHOOK_ROUTER, ALL_EVENTS, deliver_policy=api.DeliverPolicy.NEW
        )
        events = manifest["streams"].get(EVENTS_STREAM, {"last_seq": 0})
        rebuilt = not same or int(manifest["projection_position"]) > int(events["last_seq"])
        if rebuilt:
            engine = make_engine(settings.db_url)
            try:
                await rebuild(bus, session_factory(engine))
            finally:
                engine.dispose()
            await asyncio.to_thread(keep_archived_rows, settings.db_url, db)
        return Summary(src, messages, rows, keys, rebuilt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
