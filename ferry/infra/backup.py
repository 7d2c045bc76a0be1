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
import base64
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import nats.js.errors
from alembic.util.exc import CommandError
from nats.js import JetStreamContext, api
from sqlalchemy import Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.engine import Connection

from ferry.db.engine import current_revision, make_engine, upgrade
from ferry.domain.errors import FerryError
from ferry.infra import directget
from ferry.infra.bus import Bus
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.secrets import KEY_FILE
from ferry.infra.settings import Settings

FORMAT = 1
STREAMS = (EVENTS_STREAM, "KV_ferry-env-locks", "KV_ferry-builds", "OBJ_ferry-artifacts")
DROPPED_HEADERS = ("Nats-Expected-",)
"""Publish-time guards stored with a message: re-published as they were, they would refuse it."""


class BackupError(FerryError):
    pass


@dataclass(frozen=True)
class Summary:
    path: Path
    messages: dict[str, int]
    rows: dict[str, int]
    keys: list[str]
    rebuilt: bool = False


# --- values in JSON ---------------------------------------------------------------
def _enc(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, raw),) = value.items()
        if tag == "$b":
            return base64.b64decode(raw)
        if tag == "$dt":
            return datetime.fromisoformat(raw)
        if tag == "$d":
            return date.fromisoformat(raw)
    return value


# --- the database -----------------------------------------------------------------
def _tables(conn: Connection) -> list[Table]:
    meta = MetaData()
    meta.reflect(bind=conn)
    return list(meta.sorted_tables)  # parents before children


def dump_db(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = {}
            for table in _tables(conn):
                rows = conn.execute(select(table)).mappings().all()
                tables[table.name] = [{k: _enc(v) for k, v in row.items()} for row in rows]
            position = 0
            if "projection_position" in tables:
                position = max((int(r["seq"]) for r in tables["projection_position"]), default=0)
        return {"revision": current_revision(url), "position": position, "tables": tables}
    finally:
        engine.dispose()


def refuse_unless_empty_db(url: str) -> None:
    """``BackupError`` when the database already holds configuration or releases."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = {t.name: t for t in _tables(conn)}
            for name in ("projects", "releases", "credentials", "hosts"):
                if name in tables and conn.execute(select(func.count()).select_from(tables[name])).scalar():
                    raise BackupError(f"the database already holds {name}: restore into an empty one")
    finally:
        engine.dispose()


async def refuse_unless_empty_streams(js: JetStreamContext, streams: list[str]) -> None:
    for stream in streams:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        if info.state.messages:
            raise BackupError(f"stream {stream} already holds messages: restore into an empty NATS")


def load_db(url: str, dump: dict[str, Any]) -> dict[str, int]:
    """Migrate an empty database to the dump's revision, insert every row, then migrate to head."""
    refuse_unless_empty_db(url)
    revision = dump.get("revision")
    try:
        upgrade(url, revision or "head")
    except CommandError as exc:  # a revision this version does not know
        raise BackupError(
            f"the backup's database is at revision {revision!r}, which this ferry does not know: "
            "restore with the version that wrote it (or a newer one)",
            field="src",
        ) from exc
    engine = make_engine(url)
    counts: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            tables = {t.name: t for t in _tables(conn)}
            for name, table in tables.items():
                rows = dump["tables"].get(name, [])
                if name == "alembic_version":
                    continue
                if rows:
                    cols = set(table.c.keys())
                    conn.execute(
                        insert(table), [{k: _dec(v) for k, v in r.items() if k in cols} for r in rows]
                    )
                counts[name] = len(rows)
            if conn.dialect.name == "postgresql":  # serial ids go on after the restored rows
                for name, table in tables.items():
                    if "id" in table.c and isinstance(table.c.id.type, Integer) and counts.get(name):
                        conn.execute(
                            text(
                                "SELECT setval(s.seq, (SELECT max(id) FROM "  # noqa: S608 - reflected names
                                f"\"{name}\")) FROM (SELECT pg_get_serial_sequence(:t, 'id') AS seq) s "
                                "WHERE s.seq IS NOT NULL"
                            ),
                            {"t": name},
                        )
    finally:
        engine.dispose()
    upgrade(url)
    return counts


# --- the streams ------------------------------------------------------------------
DIRECT_GET_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
    }
)
"""What a direct get adds to a stored message's own headers."""


async def _read_all(js: JetStreamContext, stream: str, first: int, last: int, direct: bool) -> Any:
    """(seq, subject, headers, data) of every message from ``first`` to ``last``; no consumer."""
    if direct:  # batched: 256 messages a round trip (an object store holds many chunks)
        async for msg in directget.messages(js._nc, stream, ">", first, 256, what=f"stream {stream}"):
            headers = dict(msg.headers or {})
            seq = int(headers["Nats-Sequence"])
            if seq > last:
                return
            yield seq, headers["Nats-Subject"], headers, msg.data
        return
    for seq in range(first, last + 1):
        try:
            raw = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue  # deleted or purged (a collected object's chunks)
        yield seq, raw.subject, dict(raw.headers or {}), raw.data


async def dump_stream(js: JetStreamContext, stream: str, out: Path) -> dict[str, Any] | None:
    """Write every message of ``stream`` up to its current last sequence; its config and range."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return None
    first, last = max(int(info.state.first_seq), 1), int(info.state.last_seq)
    count = 0
    with open(out, "w", encoding="utf-8") as f:
        if info.state.messages:
            async for seq, subject, headers, data in _read_all(
                js, stream, first, last, bool(info.config.allow_direct)
            ):
                kept = {
                    k: v
                    for k, v in headers.items()
                    if k not in DIRECT_GET_HEADERS and not k.startswith(DROPPED_HEADERS)
                }
                record = {
                    "seq": seq,
                    "subject": subject,
                    "headers": kept,
                    "data": base64.b64encode(data or b"").decode(),
                }
                f.write(json.dumps(record) + "\n")
                count += 1
    return {"config": info.config.as_dict(), "first_seq": first, "last_seq": last, "messages": count}


async def load_stream(
    js: JetStreamContext, stream: str, meta: dict[str, Any], src: Path, replicas: int
) -> bool:
    """Recreate ``stream`` and re-publish its messages in order; whether every sequence was kept."""
    config = api.StreamConfig.from_response(dict(meta["config"]))
    config.num_replicas = replicas
    try:
        info = await js.stream_info(stream)
        if info.state.messages:
            raise BackupError(f"stream {stream} already holds messages: restore into an empty NATS")
        await js.update_stream(config)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
    same = True
    with open(src, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            ack = await js.publish(
                record["subject"],
                base64.b64decode(record["data"]),
                stream=stream,
                headers=record["headers"] or None,
            )
            same = same and ack.seq == record["seq"]
    return same


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
    from ferry.db.engine import session_factory
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
        events = manifest["streams"].get(EVENTS_STREAM, {"last_seq": 0})
        rebuilt = not same or int(manifest["projection_position"]) > int(events["last_seq"])
        if rebuilt:
            engine = make_engine(settings.db_url)
            try:
                await rebuild(bus, session_factory(engine))
            finally:
                engine.dispose()
        return Summary(src, messages, rows, keys, rebuilt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
