"""Alembic environment: online migrations only, against ferry's metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ferry.db.engine import make_engine
from ferry.db.models import Base
from ferry.infra.settings import Settings

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.attributes.get("url") or Settings.from_env().db_url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("ferry migrations run online only: use `ferry db upgrade`")
run_migrations_online()
