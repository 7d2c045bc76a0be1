"""The database in a backup: every table row by row (SQLAlchemy reflection, the same on SQLite and
PostgreSQL), restored at the backup's alembic revision and then migrated to the latest."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

from alembic.util.exc import CommandError
from sqlalchemy import Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.engine import Connection

from ferry.db.engine import current_revision, make_engine, upgrade
from ferry.infra.backup.errors import BackupError


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


def load_db(url: str, dump: dict[str, Any], *, to_head: bool = True) -> dict[str, int]:
    """Migrate an empty database to the dump's revision, insert every row, then migrate to head
    (unless ``to_head`` is False: the database stays at the dump's revision)."""
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
    if to_head:
        upgrade(url)
    return counts


def keep_archived_rows(url: str, dump: dict[str, Any]) -> int:
    """After a rebuild: the read-model rows of releases the stream no longer holds (their history
    went to the retention archive) come back from the dump; how many releases."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            tables = {t.name: t for t in _tables(conn)}
            present = set(conn.execute(select(tables["releases"].c.id)).scalars())
            missing = {r["id"] for r in dump["tables"].get("releases", []) if r["id"] not in present}
            for name, key in (
                ("releases", "id"),
                ("release_hosts", "release_id"),
                ("host_steps", "release_id"),
            ):
                table = tables[name]
                cols = set(table.c.keys())
                rows = [
                    {k: _dec(v) for k, v in r.items() if k in cols}
                    for r in dump["tables"].get(name, [])
                    if r[key] in missing
                ]
                if rows:
                    conn.execute(insert(table), rows)
        return len(missing)
    finally:
        engine.dispose()
