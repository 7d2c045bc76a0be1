"""pytest fixtures for the database: one contract, run on SQLite and on PostgreSQL.

``db_url`` is parametrized (ids ``sqlite`` and ``postgresql``). PostgreSQL comes from
``FERRY_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``): the
session creates a fresh ``ferry_test_<random>`` database and drops it at the end, and every
test starts from an empty ``public`` schema. Unreachable PostgreSQL skips, unless ``CI=true``.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ferry.db.engine import make_engine, normalize_url, upgrade
from ferry.db.engine import session_factory as make_session_factory
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe
from ferry.domain.release import (
    Approve,
    Cancel,
    Command,
    Fail,
    FailBuild,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    Reject,
    ReleaseState,
    RequestRelease,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)

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


# --- valid release histories, generated through the aggregate's own decide() ----------------
def release_histories(total: int, *, seed: int = 7, hosts: int = 3) -> dict[str, list[Event]]:
    """Histories of several releases, ``total`` events in all, every one accepted by ``decide``.

    A mix of outcomes: succeeded, failed on a host (with rollbacks), build failed, rejected,
    cancelled; the last release is cut short wherever ``total`` ends (still in progress).
    """
    rng = random.Random(seed)
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i) for i in range(10**9))
    out: dict[str, list[Event]] = {}
    count = 0
    n = 0
    while count < total:
        rid = f"r{n:04d}"
        n += 1
        events = _one_history(rid, rng, clock, hosts)
        events = events[: total - count]
        out[rid] = events
        count += len(events)
    return out


def _one_history(rid: str, rng: random.Random, clock: Iterator[datetime], n_hosts: int) -> list[Event]:
    names = tuple(f"web{i}" for i in rng.sample(range(1, 10), n_hosts))
    plan = Plan(
        recipe=Recipe(repo_url="file:///srv/git/app.git", deploy_path="/srv/app"),
        hosts=names,
        require_approval=rng.random() < 0.2,
    )
    history: list[Event] = []
    state = ReleaseState(rid)

    def do(command: Command) -> None:
        nonlocal state
        new = decide(state, command, next(clock))
        history.extend(new)
        for e in new:
            state = evolve(state, e)

    do(
        RequestRelease(
            project=rng.choice(["shop", "blog"]),
            environment=rng.choice(["prod", "test"]),
            ref="main",
            requested_by=rng.choice(["alice", "bob"]),
            plan=plan,
        )
    )
    outcome = rng.random()
    if plan.require_approval:
        if outcome < 0.3:
            do(Reject(by="carol", reason="not today"))
            return history
        do(Approve(by="carol"))
    if outcome > 0.95:
        do(Cancel(by="alice", reason="wrong ref"))
        return history
    do(StartBuild(builder="b1"))
    do(RecordSource(commit=f"{rng.getrandbits(160):040x}", duration=0.25))
    do(RecordHook(index=0, command="make build", exit_code=0, duration=1.5, output_tail="built ✓\n"))
    if outcome > 0.9:
        do(FailBuild(stage="hooks", reason="make test exited 2", output_tail="FAILED test_x\n"))
        return history
    do(
        RecordArtifact(
            digest=f"sha256:{rng.getrandbits(256):064x}",
            size=rng.randint(1, 10**9),
            format="zst",
            reused=rng.random() < 0.3,
        )
    )
    fail_at = (rng.choice(names), rng.choice(HOST_STEPS)) if outcome < 0.35 else None
    pending = {h: list(HOST_STEPS) for h in names}
    while pending:
        host = rng.choice(sorted(pending))
        step = pending[host].pop(0)
        do(StartHostStep(host=host, step=step, agent="a1"))
        failed = (host, step) == fail_at
        detail: dict[str, object] = {"previous": "r-prev"} if step == "activate" else {}
        do(
            FinishHostStep(
                host=host,
                step=step,
                exit_code=1 if failed else 0,
                duration=round(rng.random(), 3),
                output_tail=f"{step} on {host}\n",
                detail=detail,
            )
        )
        if failed:
            do(FailHost(host=host, step=step, reason=f"{step} exited 1"))
            for other in sorted(pending):
                if other != host and state.hosts[other].status == "running":
                    do(FailHost(host=other, step=pending[other][0], reason="rollout stopped", code="ABORTED"))
            for name in names:
                if state.hosts[name].activated:
                    do(RollBackHost(host=name, to_release="r-prev", output_tail="rolled back\n"))
            do(Fail(reason=f"host {host} failed at {step}"))
            return history
        if not pending[host]:
            del pending[host]
    do(Succeed())
    return history
