"""Fixtures for API tests: the real gateway app (ASGI, lifespan run) on a real nats-server and database.

``api`` records every response body so a test can assert a secret never left the server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette

from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer
from services.gateway.app import Gateway, create_app


def ssh_keypair() -> tuple[str, str]:
    """A fresh Ed25519 key: (OpenSSH private key text, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Starlette
    bodies: list[str] = field(default_factory=list)

    @property
    def gw(self) -> Gateway:
        gw: Gateway = self.app.state.gw
        return gw

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return await self.client.post(path, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return await self.client.patch(path, json=body, **kw)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path)

    async def raw(self, method: str, path: str, content: bytes) -> httpx.Response:
        return await self.client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = await self.client.request(method, path, json=body)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def assert_never_sent(self, secret: str) -> None:
        assert self.bodies, "no responses recorded"
        for body in self.bodies:
            assert secret not in body

    # --- seeding ------------------------------------------------------------------
    async def seed(self, *, hosts: int = 2, require_approval: bool = False, name: str = "") -> dict[str, Any]:
        """A credential, ``hosts`` pinned hosts, a project and an environment; returns their names."""
        suffix = name or uuid.uuid4().hex[:6]
        private, public = ssh_keypair()
        cred = f"key-{suffix}"
        await self.ok("POST", "/api/credentials", {"name": cred, "kind": "ssh_key", "secret": private}, 201)
        host_names = []
        for i in range(hosts):
            h = f"web{i}-{suffix}"
            await self.ok(
                "POST",
                "/api/hosts",
                {"name": h, "address": f"127.0.0.{i + 2}", "credential": cred, "host_key": public},
                201,
            )
            host_names.append(h)
        project = f"app-{suffix}"
        await self.ok("POST", "/api/projects", project_body(project, repo_credential=cred), 201)
        await self.ok(
            "POST",
            f"/api/projects/{project}/environments",
            {"name": "prod", "hosts": host_names, "concurrency": 2, "require_approval": require_approval},
            201,
        )
        return {"credential": cred, "secret": private, "hosts": host_names, "project": project, "env": "prod"}


def project_body(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "repo_url": "https://git.example.com/team/app.git",
        "build_hooks": ["make build"],
        "excludes": [".git"],
        "deploy_path": "/srv/app",
        "shared_files": [".env"],
        "shared_dirs": ["log"],
        "keep_releases": 3,
        "restart": "systemctl restart app",
        "health": {"kind": "http", "target": "http://127.0.0.1:8080/health", "retries": 3},
    }
    body.update(overrides)
    return body


@pytest.fixture
async def api(tmp_path: Path, nats_server: NatsServer, migrated_db: str) -> AsyncIterator[Api]:
    """The gateway app with its lifespan run; no background projector or orchestrator."""
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=migrated_db,
        secret_key=Fernet.generate_key().decode(),
    )
    app = create_app(settings, background=False)
    bodies: list[str] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.text)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", event_hooks={"response": [record]}
        ) as client:
            yield Api(client, app, bodies)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert {"code", "message", "field"} <= set(err), err
    return err
