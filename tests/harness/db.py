"""pytest fixtures for the database: one contract, run on SQLite and on PostgreSQL.

``db_url`` is parametrized (ids ``sqlite`` and ``postgresql``). PostgreSQL comes from
``FERRY_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``): the
session creates a fresh ``ferry_test_<random>`` database and drops it at the end, and every
test starts from an empty ``public`` schema. Unreachable PostgreSQL skips, unless ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.engine import make_engine, normalize_url
from ferry.db.engine import session_factory as make_session_factory
from ferry.db.engine import upgrade

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    """A SQLAlchemy-style URL as psycopg's conninfo (no driver suffix)."""
    return make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped when the session ends."""
    admin_url = os.environ.get("FERRY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    name = f"ferry_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL unreachable at {make_url(admin_url).render_as_string()}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(normalize_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _reset_postgres(url: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in tmp_path, or a clean schema on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ferry.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def migrated_db(db_url: str) -> str:
    """``db_url`` migrated to the latest schema."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def db_engine(migrated_db: str) -> Iterator[Engine]:
    engine = make_engine(migrated_db)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)
