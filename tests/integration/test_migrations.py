"""Migrations create exactly the models, on SQLite and PostgreSQL, from any working directory."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from ferry.db.engine import alembic_config, current_revision, downgrade, make_engine, normalize_url, upgrade
from ferry.db.models import Base


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root: the migrations come from the package
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _diff(db_url) == []


def test_upgrade_is_idempotent_and_downgrade_drops_everything(db_url):
    upgrade(db_url)
    upgrade(db_url)
    assert _diff(db_url) == []
    downgrade(db_url, "base")
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(db_url)
    assert _diff(db_url) == []


def test_sqlite_engine_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'f.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_postgres_urls_use_psycopg3(given, expected):
    assert normalize_url(given) == expected
    assert make_engine(given).dialect.driver == ("pysqlite" if given.startswith("sqlite") else "psycopg")


def test_agent_groups_migration_puts_existing_hosts_in_the_default_group(db_url):
    upgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO hosts (name, address, port, "user", host_key_policy, created_at) '
                    "VALUES ('web1', '10.0.0.1', 22, 'root', 'tofu', CURRENT_TIMESTAMP)"
                )
            )
        upgrade(db_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT agent_group FROM hosts")).scalar_one() == "default"
        downgrade(db_url, "0004")
        assert "agent_group" not in {c["name"] for c in inspect(engine).get_columns("hosts")}
    finally:
        engine.dispose()
