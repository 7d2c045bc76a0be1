"""Issue 11, item 6: ``ferry backup`` of a running instance, ``ferry restore`` into an empty one
(a fresh nats-server store and a fresh database, SQLite or PostgreSQL): releases, events,
configuration and credentials come back identical (the credentials still decrypt), and the
restored instance releases to a real sshd host."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from ferry.cli.main import app as cli
from ferry.db.engine import make_engine, normalize_url
from ferry.db.engine import session_factory as make_session_factory
from ferry.db.models import Project, Release
from ferry.infra import backup as backups
from ferry.infra.bus import open_bus
from ferry.infra.credentials import CredentialReader
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.projector import rebuild
from ferry.infra.retention import RetentionSettings, archive_pass
from ferry.infra.settings import Settings
from ferry.infra.subjects import WEBHOOK_ROUTER
from ferry.local.natsserver import NatsServer
from tests.harness import nats as harness_nats
from tests.harness.history import append_next
from tests.harness.system import System, start_system
from tests.integration.test_retention import T0, history


def _libpq(url: str) -> str:
    return make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The source instance's database and the empty one to restore into."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        admin = psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    names = [f"ferry_backup_{secrets.token_hex(4)}" for _ in range(2)]
    with admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    urls = [
        make_url(normalize_url(admin_url)).set(database=n).render_as_string(hide_password=False)
        for n in names
    ]
    try:
        yield urls[0], urls[1]
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def register(s: System, host, repo_url: str) -> None:
    s.post("/api/credentials", {"name": "k", "kind": "ssh_key", "secret": host.client_key_pem}, 201)
    s.post(
        "/api/hosts",
        {
            "name": "h1",
            "address": host.address,
            "port": host.port,
            "user": "root",
            "credential": "k",
            "host_key": host.host_key_line,
            "host_key_policy": "pinned",
        },
        201,
    )
    s.post("/api/projects", {"name": "tiny", "repo_url": repo_url, "deploy_path": "/srv/app"}, 201)
    s.post("/api/projects/tiny/environments", {"name": "prod", "hosts": ["h1"]}, 201)


def snapshot(s: System, release_ids: list[str]) -> dict[str, Any]:
    get = s.api.get
    return {
        "releases": get("/api/releases").json(),
        "views": [get(f"/api/releases/{r}").json() for r in release_ids],
        "events": [get(f"/api/releases/{r}/events").json() for r in release_ids],
        "projects": get("/api/projects").json(),
        "project": get("/api/projects/tiny").json(),
        "environments": get("/api/projects/tiny/environments").json(),
        "hosts": get("/api/hosts").json(),
        "credentials": get("/api/credentials").json(),
        "fleet": get("/api/projects/tiny/environments/prod/hosts").json(),
    }


def run_cli(args: list[str], *, home: Path, nats_url: str, db_url: str) -> str:
    env = {"FERRY_HOME": str(home), "FERRY_NATS_URL": nats_url, "FERRY_DATABASE_URL": db_url}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.sshd
def test_backup_then_restore_into_an_empty_instance(
    tmp_path: Path, nats_server, sshd_hosts, git_repos, two_databases
):
    source_db, target_db = two_databases
    (host,) = sshd_hosts(1)
    repo = git_repos.create("tiny", {"index.html": "1\n"})
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    a = start_system(home_a, nats_url=nats_server.url, database_url=source_db)
    try:
        register(a, host, repo.url)
        ids = []
        for i in range(2):
            repo.commit({"index.html": f"{i + 2}\n"}, f"v{i + 2}")
            ids.append(a.release("tiny", "prod", "main"))
            assert a.wait(ids[-1], timeout=60)["status"] == "succeeded"
        before = snapshot(a, ids)
        archive = tmp_path / "out" / "ferry-backup.tar.gz"
        said = run_cli(["backup", str(archive)], home=home_a, nats_url=nats_server.url, db_url=source_db)
        assert "SECRETS" in said and stat.S_IMODE(archive.stat().st_mode) == 0o600
    finally:
        a.api.close()
        a.launcher.stop()

    fresh = NatsServer(tmp_path / "nats-b", sync_always=True)
    fresh.start()
    harness_nats._STARTED[fresh.address] = fresh.credentials_dir
    try:
        said = run_cli(["restore", str(archive)], home=home_b, nats_url=fresh.url, db_url=target_db)
        assert "restored" in said
        reader = CredentialReader(Settings(home=home_b, database_url=target_db))
        try:
            assert reader.secret("k") == host.client_key_pem, "the credential still decrypts"
        finally:
            reader.close()
        b = start_system(home_b, nats_url=fresh.url, database_url=target_db)
        try:
            after = snapshot(b, ids)
            assert after == before
            # new rows get new ids after the restored ones (PostgreSQL's sequences were moved on)
            b.post("/api/credentials", {"name": "k2", "kind": "password", "secret": "s3cret"}, 201)
            refused = CliRunner().invoke(
                cli,
                ["restore", str(archive)],
                env={"FERRY_HOME": str(home_b), "FERRY_NATS_URL": fresh.url, "FERRY_DATABASE_URL": target_db},
            )
            assert refused.exit_code == 2 and "empty" in refused.output, "never restored over an instance"
            repo.commit({"index.html": "after restore\n"}, "v4")
            again = b.release("tiny", "prod", "main")
            assert b.wait(again, timeout=60)["status"] == "succeeded"
            assert (host.srv_path / "app" / "current" / "index.html").read_text() == "after restore\n"
        finally:
            b.api.close()
            b.launcher.stop()
    finally:
        harness_nats._STARTED.pop(fresh.address, None)
        fresh.stop()


def test_restore_refuses_what_it_cannot_restore(tmp_path: Path, nats_server):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    not_a_backup = tmp_path / "notes.tar.gz"
    not_a_backup.write_bytes(b"not a tar")
    result = CliRunner().invoke(
        cli,
        ["restore", str(tmp_path / "missing.tar.gz")],
        env={"FERRY_HOME": str(tmp_path), "FERRY_NATS_URL": nats_server.url, "FERRY_DATABASE_URL": db},
    )
    assert result.exit_code == 2 and "is not a backup archive" in result.output
    result = CliRunner().invoke(
        cli,
        ["restore", str(not_a_backup)],
        env={"FERRY_HOME": str(tmp_path), "FERRY_NATS_URL": nats_server.url, "FERRY_DATABASE_URL": db},
    )
    assert result.exit_code == 2 and "is not a backup archive" in result.output, result.output

    dump = backups.dump_db(db)  # an empty database at no revision
    dump["revision"] = "9999_from_the_future"
    with pytest.raises(backups.BackupError, match="does not know"):
        backups.load_db(db, dump)


async def test_a_restore_after_retention_rebuilds_and_keeps_the_archived_releases(
    bus, session_factory, migrated_db: str, tmp_path: Path
):
    """Retention purged old releases from the stream: the restored events land on new sequences,
    so the read model is rebuilt, and the archived releases' rows come back from the dump. The
    webhook router of the restored instance starts after the restored history."""
    with session_factory() as session, session.begin():
        session.add(Project(name="shop", repo_url="file:///srv/git/app.git", config={"keep_releases": 2}))
    ids = [f"r{i}" for i in range(6)]
    for n, rid in enumerate(ids):
        await append_next(bus.events, history(rid, n, ids[n - 1] if n else None))
    await rebuild(bus, session_factory)
    retained = RetentionSettings(days=30, archive=tmp_path / "archive")
    assert (await archive_pass(bus, session_factory, retained, now=T0 + timedelta(days=60))).archived == ids[
        :4
    ]
    kept_events = {rid: await bus.events.load(rid) for rid in ids[4:]}
    archive = tmp_path / "backup.tar.gz"
    await backups.backup(bus, Settings(home=tmp_path / "a", database_url=migrated_db), archive)

    fresh = NatsServer(tmp_path / "nats-b", sync_always=True)
    fresh.start()
    target = f"sqlite:///{tmp_path / 'b.db'}"  # from either backend into SQLite
    try:
        restored = await open_bus(fresh.url, name="test-restore")
        try:
            summary = await backups.restore(
                restored, Settings(home=tmp_path / "b", database_url=target), archive
            )
            assert summary.rebuilt
            for rid, events in kept_events.items():
                again = await restored.events.load(rid)
                assert [s.event for s in again] == [s.event for s in events]
            router = await restored.js.consumer_info(EVENTS_STREAM, WEBHOOK_ROUTER)
            assert router.num_pending == 0, "no webhook of the history is sent again"
        finally:
            await restored.close()
        engine = make_engine(target)
        try:
            with make_session_factory(engine)() as session:
                rows = {r.id: r.status for r in session.scalars(select(Release))}
        finally:
            engine.dispose()
        assert rows == dict.fromkeys(ids, "succeeded"), "archived releases keep their rows"
    finally:
        fresh.stop()
