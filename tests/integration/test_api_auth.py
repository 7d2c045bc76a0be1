"""Token authentication on the real gateway app (and notifier), real nats-server, SQLite and PostgreSQL.

Auth off (a loopback gateway, the default) is what every other API test runs; here it is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from cryptography.fernet import Fernet
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosed

from ferry.cli.main import app as cli
from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.domain import auth
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from services.gateway.app import create_app
from services.notifier.app import NotifierConfig
from services.notifier.app import create_app as create_notifier
from services.notifier.bootstrap import server_config
from tests.integration.api_harness import Api, error_of
from tests.integration.test_cli_release import LiveGateway

ORIGIN = "http://localhost"


@dataclass
class Secured:
    admin: Api
    """Sends the bootstrap admin token with every request."""
    anon: httpx.AsyncClient
    """Sends nothing: add the headers or cookies a test is about."""
    admin_token: str
    bodies: list[str]

    async def token(self, name: str, role: str) -> str:
        r = await self.admin.post("/api/tokens", {"name": name, "role": role})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def as_(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def secured_settings(tmp_path: Path, nats_url: str, db: str, **kw: Any) -> Settings:
    return Settings(
        home=tmp_path / "home",
        nats_url=nats_url,
        database_url=db,
        secret_key=Fernet.generate_key().decode(),
        auth="token",
        **kw,
    )


@pytest.fixture
async def secured(tmp_path: Path, nats_server: NatsServer, migrated_db: str) -> AsyncIterator[Secured]:
    """The gateway app with FERRY_AUTH=token and a bootstrap admin token."""
    admin_token = auth.new_token()
    settings = secured_settings(tmp_path, nats_server.url, migrated_db, bootstrap_token=admin_token)
    app = create_app(settings, background=False)
    bodies: list[str] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.text)

    hooks = {"response": [record]}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url=ORIGIN,
                event_hooks=hooks,
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as admin,
            httpx.AsyncClient(transport=transport, base_url=ORIGIN, event_hooks=hooks) as anon,
        ):
            yield Secured(Api(admin, app, bodies), anon, admin_token, bodies)


def release_body(seeded: dict[str, Any]) -> dict[str, str]:
    return {"project": seeded["project"], "environment": seeded["env"], "ref": "main"}


# --- who gets in ---------------------------------------------------------------------
async def test_no_token_or_an_unknown_one_is_401_with_a_bearer_challenge(secured: Secured) -> None:
    for headers in ({}, {"Authorization": "Bearer fry_" + "x" * 43}, {"Authorization": "Basic YTpi"}):
        r = await secured.anon.get("/api/projects", headers=headers)
        assert r.status_code == 401, r.text
        assert error_of(r)["code"] == "UNAUTHENTICATED"
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await secured.anon.post("/api/projects", json={"name": "x"})
    assert r.status_code == 401
    r = await secured.anon.get("/api/no-such-thing")
    assert r.status_code == 401  # no path enumeration without a token
    # The OpenAPI document is public, and says how to authenticate.
    doc = (await secured.anon.get("/api/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/api/releases"]["post"]["x-ferry-role"] == "deployer"
    assert doc["paths"]["/api/openapi.json"]["get"]["security"] == []
    assert (await secured.anon.get("/healthz")).status_code == 200


async def test_roles(secured: Secured) -> None:
    seeded = await secured.admin.seed(hosts=1)  # admin: credentials, hosts, projects, environments
    viewer = secured.as_(await secured.token("dash", "viewer"))
    deployer = secured.as_(await secured.token("ci", "deployer"))

    for path in ("/api/projects", f"/api/projects/{seeded['project']}", "/api/hosts", "/api/releases"):
        assert (await secured.anon.get(path, headers=viewer)).status_code == 200, path
    r = await secured.anon.post("/api/releases", json=release_body(seeded), headers=viewer)
    assert r.status_code == 403, r.text
    err = error_of(r)
    assert err["code"] == "FORBIDDEN" and "deployer" in err["message"] and "'dash'" in err["message"]
    assert (await secured.anon.get("/api/tokens", headers=viewer)).status_code == 403

    r = await secured.anon.post("/api/releases", json=release_body(seeded), headers=deployer)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    r = await secured.anon.post(f"/api/releases/{rid}/cancel", json={"reason": "test"}, headers=deployer)
    assert r.status_code == 200, r.text
    r = await secured.anon.post("/api/projects", json={"name": "nope"}, headers=deployer)
    assert r.status_code == 403 and "admin" in error_of(r)["message"]
    r = await secured.anon.delete(f"/api/hosts/{seeded['hosts'][0]}", headers=deployer)
    assert r.status_code == 403
    r = await secured.anon.post("/api/tokens", json={"name": "mine", "role": "admin"}, headers=deployer)
    assert r.status_code == 403

    # admin: everything, releases included.
    r = await secured.admin.post("/api/releases", release_body(seeded))
    assert r.status_code == 202, r.text
    assert (await secured.admin.get("/api/webhooks")).status_code == 200


async def test_a_token_is_shown_once_and_works_until_revoked(secured: Secured) -> None:
    r = await secured.admin.post("/api/tokens", {"name": "deploy-bot", "role": "deployer"})
    assert r.status_code == 201 and r.headers["location"] == "/api/tokens/deploy-bot"
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    token = created["token"]
    assert token.startswith("fry_") and created["role"] == "deployer" and created["last_used_at"] is None

    listed = await secured.admin.get("/api/tokens")
    assert listed.status_code == 200
    names = {t["name"]: t for t in listed.json()["tokens"]}
    assert set(names) == {"bootstrap", "deploy-bot"} and names["bootstrap"]["role"] == "admin"
    assert all(set(t) == {"name", "role", "created_at", "last_used_at"} for t in names.values())
    one = await secured.admin.get("/api/tokens/deploy-bot")
    assert one.status_code == 200 and "token" not in one.json()
    assert token not in listed.text and token not in one.text
    assert secured.admin_token not in listed.text

    assert (await secured.anon.get("/api/projects", headers=secured.as_(token))).status_code == 200
    used = (await secured.admin.get("/api/tokens/deploy-bot")).json()
    assert used["last_used_at"] is not None

    dup = await secured.admin.post("/api/tokens", {"name": "deploy-bot", "role": "viewer"})
    assert dup.status_code == 409 and error_of(dup)["field"] == "name"
    bad = await secured.admin.post("/api/tokens", {"name": "x", "role": "root"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "role"

    assert (await secured.admin.delete("/api/tokens/deploy-bot")).status_code == 204
    r = await secured.anon.get("/api/projects", headers=secured.as_(token))
    assert r.status_code == 401 and "revoked" in error_of(r)["message"]
    assert (await secured.admin.delete("/api/tokens/deploy-bot")).status_code == 404

    # Only the create answer ever carried the token.
    assert sum(token in body for body in secured.bodies) == 1


async def test_last_used_at_is_written_at_most_once_a_minute(secured: Secured) -> None:
    token = await secured.token("poller", "viewer")
    checker = secured.admin.gw.tokens
    writes: list[int] = []
    original = repo.touch_token

    def counting(*args: Any, **kw: Any) -> bool:
        writes.append(1)
        return original(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repo, "touch_token", counting)
        for _ in range(5):
            assert (await secured.anon.get("/api/hosts", headers=secured.as_(token))).status_code == 200
    assert len(writes) == 1
    assert checker.touch_interval == 60.0


async def test_requested_by_and_approvals_are_the_token_name(secured: Secured) -> None:
    seeded = await secured.admin.seed(hosts=1, require_approval=True)
    deployer = secured.as_(await secured.token("release-bot", "deployer"))
    body = {**release_body(seeded), "requested_by": "someone-else"}
    r = await secured.anon.post("/api/releases", json=body, headers={**deployer, "X-Ferry-User": "mallory"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    approver = secured.as_(await secured.token("boss", "deployer"))
    r = await secured.anon.post(f"/api/releases/{rid}/approve", headers={**approver, "X-Ferry-User": "eve"})
    assert r.status_code == 200, r.text
    events = [e["event"] for e in (await secured.admin.get(f"/api/releases/{rid}/events")).json()["events"]]
    assert events[0]["type"] == "release.requested" and events[0]["requested_by"] == "release-bot"
    approved = [e for e in events if e["type"] == "release.approved"]
    assert approved and approved[0]["by"] == "boss"
    # No event carries a token.
    text = str(events)
    assert "fry_" not in text and secured.admin_token not in text


# --- the portal's cookie ---------------------------------------------------------------
async def test_cookie_requests_must_come_from_the_portal_itself(secured: Secured) -> None:
    seeded = await secured.admin.seed(hosts=1)
    token = await secured.token("browser", "deployer")
    cookies = {auth.COOKIE_NAME: token}
    client = secured.anon
    client.cookies.update(cookies)
    try:
        assert (await client.get("/api/projects")).status_code == 200  # reads need no Origin
        for headers in (
            {},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://ferry.test.evil.example"},
            {"Referer": "http://evil.example/ferry.test"},
        ):
            r = await client.post("/api/releases", json=release_body(seeded), headers=headers)
            assert r.status_code == 403, (headers, r.text)
            err = error_of(r)
            assert err["code"] in ("FORBIDDEN", "FOREIGN_ORIGIN") and err["field"] == "origin"
        r = await client.post("/api/releases", json=release_body(seeded), headers={"Origin": ORIGIN})
        assert r.status_code == 202, r.text
        r = await client.post(
            "/api/releases", json=release_body(seeded), headers={"Referer": f"{ORIGIN}/projects/x/release"}
        )
        assert r.status_code == 202, r.text
        # A bearer token is exempt: no browser attaches it by itself.
        client.cookies.clear()
        r = await client.post(
            "/api/releases",
            json=release_body(seeded),
            headers={**secured.as_(token), "Origin": "http://evil.example"},
        )
        assert r.status_code == 202, r.text
    finally:
        client.cookies.clear()


async def test_portal_login_and_logout(secured: Secured) -> None:
    client = secured.anon
    r = await client.get("/projects/shop?tab=1")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/projects/shop%3Ftab%3D1"
    assert (await client.get("/static/portal.css")).status_code == 200
    page = await client.get("/login?next=//evil.example/")
    assert page.status_code == 200 and 'name="next" value="/"' in page.text

    token = await secured.token("alice", "viewer")
    form = {"token": "fry_wrong-wrong-wrong-wrong", "next": "/"}
    r = await client.post("/login", data=form, headers={"Origin": ORIGIN})
    assert r.status_code == 401 and "unknown or revoked" in r.text and "set-cookie" not in r.headers
    r = await client.post(
        "/login", data={"token": token, "next": "/"}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers

    r = await client.post(
        "/login", data={"token": token, "next": "https://evil.example/"}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    try:
        home = await client.get("/")
        assert home.status_code == 200 and 'id="account-name">alice</strong> (viewer)' in home.text
        r = await client.post("/logout", headers={"Origin": ORIGIN})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert 'ferry_token=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    finally:
        client.cookies.clear()
    assert (await client.get("/")).status_code == 303


async def test_bootstrap_token_is_kept_across_restarts(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    first, second = auth.new_token(), auth.new_token()
    for token in (first, first, second):
        settings = secured_settings(tmp_path, nats_server.url, migrated_db, bootstrap_token=token)
        app = create_app(settings, background=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
                r = await client.get("/api/tokens", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200 and [t["name"] for t in r.json()["tokens"]] == ["bootstrap"]
    # The secret changed: the old value no longer works.
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
            r = await client.get("/api/tokens", headers={"Authorization": f"Bearer {first}"})
            assert r.status_code == 401


async def test_auth_off_on_loopback_keeps_x_ferry_user(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    settings = Settings(home=tmp_path / "home", nats_url=nats_server.url, database_url=migrated_db)
    assert not settings.auth_required
    app = create_app(settings, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
            assert (await client.get("/api/projects")).status_code == 200
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/login")).status_code == 303  # nothing to sign in to


# --- the notifier ---------------------------------------------------------------------
@contextlib.asynccontextmanager
async def secured_notifier(settings: Settings) -> AsyncIterator[str]:
    app = create_notifier(
        settings, NotifierConfig(heartbeat=0.3, first_message_timeout=0.3, token="ws-s3cret")
    )
    server = uvicorn.Server(server_config(settings, app))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "notifier did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{settings.ws_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _first_frame(url: str, **kw: Any) -> dict[str, Any] | int:
    """The first frame's kind, or the close code when the notifier refused."""
    async with websockets.connect(url, **kw) as ws:
        try:
            frame = await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code
        return {"frame": frame}


async def test_notifier_needs_a_valid_token(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    engine = make_engine(migrated_db)
    token, revoked = auth.new_token(), auth.new_token()
    with session_factory(engine)() as session, session.begin():
        repo.create_token(session, "watcher", "viewer", auth.hash_token(token))
        repo.create_token(session, "gone", "viewer", auth.hash_token(revoked))
        repo.revoke_token(session, "gone")
    engine.dispose()
    settings = secured_settings(tmp_path, nats_server.url, migrated_db, ws_port=free_port())
    async with secured_notifier(settings) as url:
        base = f"{url}/ws/all?since=0"
        assert await _first_frame(base) == 4401
        assert await _first_frame(f"{base}&token={revoked}") == 4401
        assert await _first_frame(f"{base}&token=fry_nonsense-nonsense") == 4401
        # A cookie from a page on another host is refused even with a valid token: the upgrade
        # itself is refused (403) before any WebSocket exists.
        cookie = {"Cookie": f"{auth.COOKIE_NAME}={token}"}
        evil = {**cookie, "Origin": "http://evil.example:8000"}
        with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):
            await _first_frame(base, additional_headers=evil)

        assert isinstance(await _first_frame(f"{base}&token={token}"), dict)
        portal = {**cookie, "Origin": "http://127.0.0.1:8000"}
        assert isinstance(await _first_frame(base, additional_headers=portal), dict)
        assert isinstance(await _first_frame(f"{base}&token=ws-s3cret"), dict)  # FERRY_WS_TOKEN still works


# --- the CLI --------------------------------------------------------------------------
def test_cli_sends_ferry_token(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry.db.engine import upgrade
    from tests.integration.api_harness import project_body, ssh_keypair

    db = f"sqlite:///{tmp_path / 'ferry.db'}"
    upgrade(db)
    admin = auth.new_token()
    settings = secured_settings(tmp_path, nats_server.url, db, bootstrap_token=admin, http_port=free_port())
    with (
        LiveGateway(settings) as gw,
        httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {admin}"}) as http,
    ):
        private, public = ssh_keypair()
        for path, body in (
            ("/api/credentials", {"name": "k", "kind": "ssh_key", "secret": private}),
            ("/api/hosts", {"name": "web1", "address": "127.0.0.2", "credential": "k", "host_key": public}),
            ("/api/projects", project_body("shop")),
            ("/api/projects/shop/environments", {"name": "prod", "hosts": ["web1"]}),
        ):
            assert http.post(path, json=body).status_code == 201
        monkeypatch.setenv("FERRY_URL", gw.url)
        monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FERRY_DATABASE_URL", db)
        monkeypatch.delenv("FERRY_TOKEN", raising=False)
        runner = CliRunner()
        args = ["release", "create", "--project", "shop", "--env", "prod", "--ref", "main"]

        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and "UNAUTHENTICATED" in result.stderr

        # ferry token create works on the database directly (bootstrapping) and prints the token once.
        made = runner.invoke(cli, ["token", "create", "ci-bot", "--role", "deployer"])
        assert made.exit_code == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("fry_") and "shown only now" in made.stderr
        listed = runner.invoke(cli, ["token", "list"])
        assert listed.exit_code == 0 and "ci-bot" in listed.stdout and token not in listed.stdout

        monkeypatch.setenv("FERRY_TOKEN", token)
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        rid = result.stdout.strip()
        assert http.get(f"/api/releases/{rid}").json()["requested_by"] == "ci-bot"

        assert runner.invoke(cli, ["token", "revoke", "ci-bot"]).exit_code == 0
        result = runner.invoke(cli, ["release", "show", rid])
        assert result.exit_code == 2 and "revoked" in result.stderr


async def test_a_revoked_bootstrap_token_stays_revoked_and_the_last_admin_stays(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    token = auth.new_token()
    settings = secured_settings(tmp_path, nats_server.url, migrated_db, bootstrap_token=token)
    bearer = {"Authorization": f"Bearer {token}"}
    for restart in range(2):
        app = create_app(settings, background=False)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
                if restart == 0:
                    r = await client.delete("/api/tokens/bootstrap", headers=bearer)
                    assert r.status_code == 409, r.text  # the last admin token: everyone would be locked out
                    ops = {"name": "ops", "role": "admin"}
                    r = await client.post("/api/tokens", json=ops, headers=bearer)
                    assert r.status_code == 201, r.text
                    by_ops = {"Authorization": f"Bearer {r.json()['token']}"}
                    # Nor may a request revoke its own token (an admin locking itself out mid-session).
                    r = await client.delete("/api/tokens/bootstrap", headers=bearer)
                    assert r.status_code == 409 and "token of this request" in r.text, r.text
                    r = await client.delete("/api/tokens/bootstrap", headers=by_ops)
                    assert r.status_code == 204, r.text
                else:  # the gateway started again with the same FERRY_BOOTSTRAP_TOKEN
                    r = await client.get("/api/tokens", headers=bearer)
                    assert r.status_code == 401, r.text
