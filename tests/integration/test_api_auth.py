"""Token authentication on the real gateway app, real nats-server, SQLite and PostgreSQL.

Who gets in, roles, tokens and the bootstrap token. Auth off (a loopback gateway, the default) is
what every other API test runs; here it is on (the `secured` fixture, from auth_harness).
"""

# ruff: noqa: F401, F811  (the `secured` fixture is imported by name)

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.db import repo
from ferry.domain import auth
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer
from services.gateway.app import create_app
from tests.integration.api_harness import error_of
from tests.integration.auth_harness import ORIGIN, Secured, release_body, secured, secured_settings


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
