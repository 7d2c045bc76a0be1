"""Issue 11, item 6: an instance of the previous version — events of older schema versions on the
old one-subject-per-release layout (``tests/fixtures/upgrade/events.jsonl``) and a database at
alembic revision 0005 (``ferry-0005.sql``) — is read, projected and continued by this version:
the database migrates to head, the release the old projector never reached is projected, and a
follow-up command on an old release succeeds. ``generate.py`` wrote the fixtures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from ferry.db.engine import current_revision
from ferry.infra.backup import dump_db, load_db
from ferry.infra.bus import open_bus
from tests.harness.system import System, start_system

FIXTURES = Path(__file__).parent.parent / "fixtures" / "upgrade"
DONE, WAITING = "rel_01JP3K7Q8M2W4X6Y9Z0OLD0001", "rel_01JP3K7Q8M2W4X6Y9Z0OLD0002"


async def publish_old_events(nats_url: str) -> int:
    """The stored stream as the old version left it (same subjects, same order, same bytes)."""
    bus = await open_bus(nats_url, name="test-upgrade")
    try:
        count = 0
        for line in (FIXTURES / "events.jsonl").read_text().splitlines():
            record = json.loads(line)
            event = record["event"]
            msg_id = f"{event['release_id']}:{event['version']}"
            await bus.js.publish(
                record["subject"], json.dumps(event).encode(), headers={"Nats-Msg-Id": msg_id}
            )
            count += 1
        return count
    finally:
        await bus.close()


def old_database(tmp_path: Path, url: str) -> None:
    """The fixture database at revision 0005: as it is on SQLite; on PostgreSQL, the same rows in a
    schema migrated to 0005 (what that version's ``ferry db upgrade`` made there)."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript((FIXTURES / "ferry-0005.sql").read_text())
    if url.startswith("sqlite:"):
        Path(url.removeprefix("sqlite:///")).write_bytes(old.read_bytes())
    else:
        load_db(url, dump_db(f"sqlite:///{old}"), to_head=False)


def test_the_new_version_reads_projects_and_continues_an_old_instance(tmp_path: Path, nats_server, db_url):
    home = tmp_path / "home"
    home.mkdir()
    url = db_url
    old_database(tmp_path, url)
    assert current_revision(url) == "0005"
    assert asyncio.run(publish_old_events(nats_server.url)) == 20

    system = start_system(home, nats_url=nats_server.url, database_url=url)
    try:
        assert current_revision(url) not in (None, "0005"), "ferry up migrated the database"
        r = system.api.get(f"/api/releases/{DONE}")
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "succeeded" and done["commit"].startswith("9f2c1e07")
        assert [s["status"] for s in done["hosts"][0]["steps"]] == ["succeeded"] * 7
        events = system.events(DONE)
        assert len(events) == 19 and events[0]["plan"]["strategy"] == "all", "v1 upcast on the way"

        # never projected by the old version: this one's projector reaches it
        view = _poll(system, WAITING, "awaiting_approval")
        assert view["requested_by"] == "alice"

        # a follow-up command on the old release: rejected, and the history goes on after it
        r = system.post(f"/api/releases/{WAITING}/reject", {"reason": "superseded after the upgrade"})
        assert r.status_code in (200, 202), r.text
        assert system.wait(WAITING, timeout=30)["status"] == "rejected"
        after = system.events(WAITING)
        assert [e["type"] for e in after] == ["release.requested", "release.rejected"]
        fleet = system.api.get("/api/projects/shop/environments/prod/hosts").json()["hosts"]
        assert [h["release"] for h in fleet] == [DONE], "fleet state read from the old history"
    finally:
        system.api.close()
        system.launcher.stop()


def _poll(system: System, release_id: str, status: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        r = system.api.get(f"/api/releases/{release_id}")
        if r.status_code == 200:
            last = r.json()
            if last["status"] == status:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{release_id} not {status} after {timeout}s: {last}")
