"""`ferry db upgrade` and `ferry projections rebuild` as commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ferry.infra.projector import Projector
from tests.harness.db import release_histories
from tests.integration.test_projector import append_interleaved, snapshot

FERRY = str(Path(sys.executable).parent / "ferry")


def run_ferry(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [FERRY, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_projections_rebuild_command_reproduces_the_read_model(
    bus, nats_server, session_factory, migrated_db, tmp_path
):
    stored = await append_interleaved(bus, release_histories(300, seed=11))
    projector = Projector(session_factory)
    projector.apply_batch(stored)
    expected = snapshot(session_factory)
    assert len(expected["releases"]) > 5 and expected["host_steps"]

    env = {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_NATS_URL": nats_server.url,
        "FERRY_DATABASE_URL": migrated_db,
    }
    assert "database at head" in run_ferry("db", "upgrade", env=env)
    out = run_ferry("projections", "rebuild", env=env)
    assert f"replayed {len(stored)} events" in out
    assert snapshot(session_factory) == expected
