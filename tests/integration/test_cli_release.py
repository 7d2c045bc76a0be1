"""``ferry release …`` against a live gateway (uvicorn on a free port, real nats-server and SQLite)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from ferry.cli.main import app as cli
from ferry.cli.release import ApiError, wait_for
from ferry.db.engine import upgrade
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from services.gateway.app import create_app
from tests.integration.api_harness import project_body, ssh_keypair


class LiveGateway:
    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.http_port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{settings.http_port}"
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def gateway(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[httpx.Client]:
    db = f"sqlite:///{tmp_path / 'ferry.db'}"
    upgrade(db)
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=db,
        http_port=free_port(),
        secret_key=Fernet.generate_key().decode(),
    )
    with LiveGateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=30) as http:
        monkeypatch.setenv("FERRY_URL", gw.url)
        monkeypatch.setenv("FERRY_USER", "cli-user")
        private, public = ssh_keypair()
        for path, body in (
            ("/api/credentials", {"name": "k", "kind": "ssh_key", "secret": private}),
            ("/api/hosts", {"name": "web1", "address": "127.0.0.2", "credential": "k", "host_key": public}),
            ("/api/projects", project_body("shop")),
            ("/api/projects/shop/environments", {"name": "prod", "hosts": ["web1"]}),
            (
                "/api/projects/shop/environments",
                {"name": "gated", "hosts": ["web1"], "require_approval": True},
            ),
        ):
            r = http.post(path, json=body)
            assert r.status_code == 201, r.text
        yield http


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_id_and_show_list_cancel(gateway: httpx.Client) -> None:
    code, out, err = run("release", "create", "--project", "shop", "--env", "prod", "--ref", "main")
    assert code == 0, err
    release_id = out.strip()
    view = gateway.get(f"/api/releases/{release_id}").json()
    assert view["ref"] == "main" and view["requested_by"] == "cli-user"

    code, out, _ = run("release", "show", release_id)
    assert code == 0 and release_id in out and "shop -> prod at main" in out and "web1" in out

    deadline = time.monotonic() + 20  # the list comes from the read model the projector fills
    while True:
        code, out, _ = run("release", "list", "--json", "--project", "shop")
        if release_id in out or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 0 and release_id in out

    code, out, err = run("release", "approve", release_id)
    assert code == 2 and "not awaiting approval" in err
    code, out, err = run("release", "cancel", release_id, "--reason", "oops")
    assert code == 0 and out.strip() == f"{release_id}: cancelled"


def test_client_errors_exit_2_with_the_api_message(gateway: httpx.Client) -> None:
    code, out, err = run("release", "create", "--project", "ghost", "--env", "prod", "--ref", "main")
    assert code == 2 and "no project named 'ghost'" in err and "field: project" in err
    code, _, err = run("release", "create", "--project", "shop", "--env", "prod", "--ref", "--upload-pack=x")
    assert code == 2 and "field: ref" in err
    code, _, err = run("release", "show", "r0-missing")
    assert code == 2 and "404" in err


def test_wait_exits_non_zero_unless_succeeded(gateway: httpx.Client) -> None:
    result: dict[str, tuple[int, str, str]] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault(
            "r",
            run("release", "create", "-p", "shop", "-e", "gated", "-r", "v1", "--wait", "--interval", "0.1"),
        )
    )
    worker.start()
    deadline = time.monotonic() + 20
    rid = None
    while rid is None and time.monotonic() < deadline:
        listed = gateway.get("/api/releases", params={"environment": "gated"}).json()["releases"]
        rid = listed[0]["id"] if listed else None
        time.sleep(0.1)
    assert rid is not None
    assert gateway.post(f"/api/releases/{rid}/reject", json={"reason": "freeze"}).status_code == 200
    worker.join(30)
    code, out, err = result["r"]
    assert code == 1 and out.strip() == rid and "rejected" in err and "freeze" in err


def test_wait_for_is_reusable(gateway: httpx.Client) -> None:
    rid = gateway.post("/api/releases", json={"project": "shop", "environment": "gated", "ref": "v2"}).json()[
        "id"
    ]
    with pytest.raises(TimeoutError):
        wait_for(gateway, rid, interval=0.05, timeout=0.2)
    gateway.post(f"/api/releases/{rid}/cancel", json={})
    seen: list[str] = []
    view = wait_for(gateway, rid, interval=0.05, on_update=lambda v: seen.append(v["status"]))
    assert view["status"] == "cancelled" and seen[-1] == "cancelled"
    with pytest.raises(ApiError) as info:
        wait_for(gateway, "r0-missing")
    assert info.value.status == 404 and info.value.exit_code == 2
