"""The whole system as real processes (gateway, builder, agents, notifier) for end-to-end tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.domain.auth import new_token
from ferry.infra.settings import Settings
from ferry.local.launcher import Launcher
from ferry.local.natsserver import NatsServer, free_port
from tests.harness.nats import ca_for, credentials_for

TERMINAL = {"succeeded", "failed", "cancelled", "rejected"}


@dataclass
class System:
    settings: Settings
    launcher: Launcher
    url: str
    api: httpx.Client
    token: str = ""
    """An admin API token (the gateway's bootstrap token); ``api`` sends it."""

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.http_host}:{self.settings.ws_port}"

    def post(self, path: str, body: dict[str, Any], expect: int | None = None) -> httpx.Response:
        r = self.api.post(path, json=body)
        if expect is not None:
            assert r.status_code == expect, f"POST {path}: {r.status_code} {r.text}"
        return r

    def release(self, project: str, environment: str, ref: str) -> str:
        r = self.post("/api/releases", {"project": project, "environment": environment, "ref": ref}, 202)
        return str(r.json()["id"])

    def wait(self, release_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll the release until it is terminal (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.api.get(f"/api/releases/{release_id}")
            assert r.status_code == 200, r.text
            last = r.json()
            if last["status"] in TERMINAL:
                return last
            self.launcher.check_children()
            time.sleep(0.2)
        raise AssertionError(
            f"release {release_id} not finished after {timeout}s: {last.get('status')}\n{self.logs()}"
        )

    def events(self, release_id: str) -> list[dict[str, Any]]:
        r = self.api.get(f"/api/releases/{release_id}/events")
        assert r.status_code == 200, r.text
        return [e["event"] for e in r.json()["events"]]

    def logs(self) -> str:
        out = []
        for f in sorted((self.settings.home / "logs").glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@contextlib.contextmanager
def supervised(launcher: Launcher) -> Iterator[list[BaseException]]:
    """Run ``launcher.supervise`` (what ``ferry up`` runs) in a thread: crashed parts come back.

    Yields the list its failure lands in (a ``LaunchError`` when something keeps dying)."""
    stop, failed = threading.Event(), []

    def run() -> None:
        try:
            launcher.supervise(stop, every=0.1)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failed.append(exc)

    thread = threading.Thread(target=run, name="ferry-up-supervisor", daemon=True)
    thread.start()
    try:
        yield failed
    finally:
        stop.set()
        thread.join(30)


def start_system(
    home: Path,
    *,
    nats_url: str | None = None,
    agents: int = 1,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    agent_env: dict[str, dict[str, str]] | None = None,
    auth: bool = False,
    stream_replicas: int = 1,
) -> System:
    """The system on loopback; ``auth`` turns token authentication on (FERRY_AUTH=token).

    Without ``nats_url`` the launcher runs its own nats-server, as ``ferry up`` does.

    ``agent_env`` adds environment for single agents by name (``agent-2``: a group of its own)."""
    token = new_token()
    settings = Settings(
        home=home,
        nats_url=nats_url,
        # the harness's server: every service connects as its own identity (ferry.infra.natsauth)
        nats_credentials_dir=credentials_for(nats_url) if nats_url else None,
        nats_ca=ca_for(nats_url) if nats_url else None,  # the harness's TLS cluster
        stream_replicas=stream_replicas,
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=free_port(),
        ws_port=free_port(),
        agent_name="agent",
        auth="token" if auth else None,
        bootstrap_token=token,
    )
    launcher = Launcher(settings, agents=agents, echo=lambda _s: None)
    launcher.extra_env = dict(extra_env or {})
    launcher.agent_env = dict(agent_env or {})
    try:
        url = launcher.start(timeout=60)
    except Exception:
        launcher.stop()
        raise
    headers = {"Authorization": f"Bearer {token}"}
    return System(
        settings, launcher, url, httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=headers), token
    )


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    """gateway + builder + 2 agents + notifier as real processes on a real nats-server and SQLite."""
    s = start_system(tmp_path / "home", nats_url=nats_server.url, agents=2)
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()
