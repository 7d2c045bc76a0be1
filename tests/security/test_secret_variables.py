"""Secret variables (issue 9, item 6): set through the API, seen by build hooks and host commands,
``***`` everywhere ferry stores or streams their output.

The whole system as processes (token auth on, a real nats-server, SQLite, an OpenSSH host): a
build hook and every host command print the variable; the events (API), the notifier's
WebSocket feed, the build and step logs, the failure reasons and the services' log files hold
``***`` and never the value, which the hook and the host command really saw (their sha256 land
in the artifact and on the host).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography.fernet import Fernet
from sqlalchemy import select

from ferry.cli.secrets import rotate_secrets
from ferry.db import repo
from ferry.db.engine import make_engine, session_factory, upgrade
from ferry.db.models import ProjectVariable
from ferry.infra.secrets import KEY_FILE, SecretBox, SecretKeyError
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer
from tests.harness.gitrepo import GitRepoFactory
from tests.harness.system import System, start_system

pytestmark = [pytest.mark.sshd]

VALUE = "tok-" + secrets.token_hex(16)
HOOK = 'echo "build sees $MY_TOKEN"; printf %s "$MY_TOKEN" | sha256sum | cut -d" " -f1 > token.sha256'
LONG = 'seq 1 1500; echo "pre sees $MY_TOKEN"; printf %s "$MY_TOKEN" | base64'  # > the 4 KiB event tail
SEEN = 'printf %s "$MY_TOKEN" | sha256sum | cut -d" " -f1 > "$FERRY_DEPLOY_PATH/seen.sha256"'


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    s = start_system(tmp_path / "home", nats_url=nats_server.url, agents=1, auth=True)
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


def _leaks(text: str) -> list[str]:
    """The forms of VALUE found in ``text`` (it, its base64)."""
    forms = [VALUE, base64.b64encode(VALUE.encode()).decode()]
    return [f for f in forms if f in text]


def _register(system: System, host: Any, repo_url: str) -> None:
    system.post("/api/credentials", {"name": "key", "kind": "ssh_key", "secret": host.client_key_pem}, 201)
    host_body = {
        "name": "h1",
        "address": host.address,
        "port": host.port,
        "user": "root",
        "credential": "key",
        "host_key": host.host_key_line,
    }
    system.post("/api/hosts", host_body, 201)
    project = {
        "name": "app",
        "repo_url": repo_url,
        "build_hooks": [HOOK],
        "deploy_path": "/srv/app",
        "pre_release": LONG,
        "restart": 'echo "restart sees $MY_TOKEN"',
        "post_release": f'echo "post sees $MY_TOKEN"; {SEEN}',
        "health": {
            "kind": "command",
            "target": 'echo "health $MY_TOKEN"',
            "timeout": 5,
            "retries": 1,
            "interval": 0.2,
        },
    }
    system.post("/api/projects", project, 201)
    system.post("/api/projects/app/environments", {"name": "prod", "hosts": ["h1"]}, 201)


def _check_api(system: System) -> None:
    """Set the variable; nothing the API answers holds it; refusals say why without quoting it."""
    url = "/api/projects/app/variables"
    r = system.api.put(f"{url}/MY_TOKEN", json={"value": VALUE})
    assert r.status_code == 200 and r.json()["created"] is True, r.text
    replaced = system.api.put(f"{url}/MY_TOKEN", json={"value": VALUE})
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    answers = [r, replaced, system.api.get(url), system.api.get(f"{url}/MY_TOKEN")]
    assert [v["name"] for v in answers[2].json()["variables"]] == ["MY_TOKEN"]
    assert set(answers[3].json()) == {"project", "name", "created_at", "updated_at"}

    short = system.api.put(f"{url}/SHORT", json={"value": "abc"})
    assert short.status_code == 422 and "masked" in short.json()["error"]["message"], short.text
    reserved = system.api.put(f"{url}/FERRY_TOKEN", json={"value": VALUE})
    assert reserved.status_code == 422 and reserved.json()["error"]["field"] == "name", reserved.text
    for bad in ("lower", "LD_PRELOAD", "PATH"):
        assert system.api.put(f"{url}/{bad}", json={"value": VALUE}).status_code == 422
    missing = system.api.put("/api/projects/nope/variables/MY_TOKEN", json={"value": VALUE})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "project"

    deployer = system.post("/api/tokens", {"name": "ci", "role": "deployer"}, 201).json()["token"]
    as_deployer = {"Authorization": f"Bearer {deployer}"}
    refused = system.api.put(f"{url}/MY_TOKEN", json={"value": "x" * 8}, headers=as_deployer)
    assert refused.status_code == 403, refused.text
    listed = system.api.get(url, headers=as_deployer)
    assert listed.status_code == 200
    answers += [short, reserved, missing, refused, listed]
    for a in answers:
        assert not _leaks(a.text), a.text
    doc = system.api.get("/api/openapi.json").json()
    assert doc["components"]["schemas"]["VariableIn"]["properties"]["value"]["writeOnly"] is True
    assert "put" in doc["paths"]["/api/projects/{project}/variables/{name}"]


async def _ws_frames(system: System, release_id: str, count: int) -> list[dict[str, Any]]:
    """The release's first ``count`` event frames from the notifier, replayed from the start."""
    url = f"{system.ws_url}/ws/releases/{release_id}?since=0&token={system.token}"
    frames: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws, asyncio.timeout(15):
        while len(frames) < count:
            frame = json.loads(await ws.recv())
            if frame["kind"] == "event":
                frames.append(frame)
    return frames


def _logs(system: System, release_id: str, events: list[dict[str, Any]]) -> list[str]:
    digests = {d for d in _walk(events, "log_digest") if isinstance(d, str)}
    texts = []
    for digest in sorted(digests):
        r = system.api.get(f"/api/releases/{release_id}/logs/{digest}")
        assert r.status_code == 200, r.text
        texts.append(r.text)
    return texts


def _walk(value: Any, key: str) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


def _assert_masked(system: System, release_id: str) -> list[dict[str, Any]]:
    events = system.events(release_id)
    text = json.dumps(events)
    assert not _leaks(text), [e for e in events if _leaks(json.dumps(e))]
    frames = asyncio.run(_ws_frames(system, release_id, len(events)))
    assert not _leaks(json.dumps(frames))
    logs = _logs(system, release_id, events)
    for log in logs:
        assert not _leaks(log) and "***" in log
    view = system.api.get(f"/api/releases/{release_id}")
    assert not _leaks(view.text)
    return events


def test_a_secret_variable_reaches_hooks_and_host_commands_and_shows_as_stars(
    system: System, sshd_host: Any, git_repos: GitRepoFactory
) -> None:
    repo = git_repos.create("app", {"index.html": "hello\n"})
    _register(system, sshd_host, repo.url)
    _check_api(system)

    rid = system.release("app", "prod", "main")
    done = system.wait(rid, timeout=60)
    assert done["status"] == "succeeded", system.events(rid)
    events = _assert_masked(system, rid)
    text = json.dumps(events)
    for said in ("build sees ***", "pre sees ***", "restart sees ***", "post sees ***", "health ***"):
        assert said in text or said in "".join(_logs(system, rid, events)), said
    assert len(_logs(system, rid, events)) == 2  # the build log and pre_release's whole output

    expected = hashlib.sha256(VALUE.encode()).hexdigest()
    app = sshd_host.srv_path / "app"
    assert (app / "current" / "token.sha256").read_text().strip() == expected  # the build hook saw it
    assert (app / "seen.sha256").read_text().strip() == expected  # so did the host command

    # A failing hook after the switch: its reason, the step's tail and the rollback's output.
    patch = {"post_release": 'echo "about to fail with $MY_TOKEN"; echo "$MY_TOKEN" >&2; exit 4'}
    r = system.api.patch("/api/projects/app", json=patch)
    assert r.status_code == 200, r.text
    repo.commit({"index.html": "two\n"}, "two")
    failed_id = system.release("app", "prod", "main")
    failed = system.wait(failed_id, timeout=60)
    assert failed["status"] == "failed", failed
    events = _assert_masked(system, failed_id)
    reasons = [e.get("reason", "") for e in events if e["type"] in ("host.failed", "release.failed")]
    assert any("***" in reason for reason in reasons), reasons

    # Nowhere at rest in plain text: the services' logs, the database file.
    logs = "".join(p.read_text(errors="replace") for p in (system.settings.home / "logs").glob("*.log"))
    assert not _leaks(logs)
    db = Path(system.settings.db_url.removeprefix("sqlite:///"))
    at_rest = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    assert at_rest and VALUE.encode() not in at_rest

    # A value no key opens (encrypted under another key): the build fails saying so, no loop.
    engine = make_engine(system.settings.db_url)
    try:
        with session_factory(engine).begin() as session:
            row = session.scalars(select(ProjectVariable)).one()
            row.value = SecretBox(Fernet.generate_key()).encrypt(VALUE)
    finally:
        engine.dispose()
    broken = system.wait(system.release("app", "prod", "main"), timeout=60)
    assert broken["status"] == "failed" and "decrypt" in (broken["reason"] or ""), broken

    assert system.api.delete("/api/projects/app/variables/MY_TOKEN").status_code == 204
    assert system.api.get("/api/projects/app/variables").json() == {"variables": []}
    gone = system.api.delete("/api/projects/app/variables/MY_TOKEN")
    assert gone.status_code == 404


def test_rotation_reencrypts_variables_and_deleting_the_project_drops_them(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'ferry.db'}")
    upgrade(settings.db_url)
    old_box = SecretBox.from_settings(settings)
    (old_key,) = (settings.home / KEY_FILE).read_bytes().split()
    engine = make_engine(settings.db_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as s:
            repo.create_project(s, "app", "file:///r", {"deploy_path": "/srv/app"})
            repo.set_variable(s, old_box, "app", "MY_TOKEN", VALUE)
            repo.set_variable(s, old_box, "app", "OTHER", VALUE[::-1])
        with sessions() as s:
            before = list(s.scalars(select(ProjectVariable.value)))
        assert len(before) == 2 and all(VALUE.encode() not in t for t in before)

        count, _ = rotate_secrets(settings)
        assert count == 2
        new_box = SecretBox.from_settings(settings)
        with sessions() as s:
            after = list(s.scalars(select(ProjectVariable.value)))
            assert repo.load_variables(s, new_box, "app") == {"MY_TOKEN": VALUE, "OTHER": VALUE[::-1]}
        assert set(after).isdisjoint(before)
        for token in after:
            with pytest.raises(SecretKeyError):
                SecretBox(old_key).decrypt(token)
        with sessions.begin() as s:
            repo.delete_project(s, "app")
        with sessions() as s:
            assert list(s.scalars(select(ProjectVariable))) == []
            assert repo.load_variables(s, new_box, "app") == {}
    finally:
        engine.dispose()
