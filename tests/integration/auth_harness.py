"""A gateway with token authentication on, for the auth tests: the `secured` fixture and its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from ferry.domain import auth
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer
from services.gateway.app import create_app
from tests.integration.api_harness import Api

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
