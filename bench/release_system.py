"""ferry as a user runs it, for bench_release.py: `ferry up` in a subprocess, its REST API, NATS counts.

Nothing here reaches into ferry's modules: the bench starts the CLI, talks HTTP to the gateway
and asks the JetStream API (through nats-py) how many consumers exist, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats

from ferry.local.localsshd import SshdHost
from ferry.local.natsserver import free_port

EVENTS_STREAM = "FERRY_EVENTS"
TERMINAL = {"succeeded", "failed", "cancelled", "rejected"}
T = TypeVar("T")


class FerryUp:
    """`ferry up` on embedded defaults (its own FERRY_HOME, free ports); stop() ends its process group."""

    def __init__(self, home: Path, *, agents: int | None = None, start_timeout: float = 90.0) -> None:
        self.home = home
        self.http_port, self.ws_port, self.nats_port = free_port(), free_port(), free_port()
        self.agents = agents
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def start(self) -> FerryUp:
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            FERRY_HOME=str(self.home),
            FERRY_HTTP_PORT=str(self.http_port),
            FERRY_WS_PORT=str(self.ws_port),
            FERRY_NATS_PORT=str(self.nats_port),
        )
        for name in ("FERRY_NATS_URL", "FERRY_DATABASE_URL", "FERRY_AUTH", "FERRY_HTTP_HOST"):
            env.pop(name, None)
        command = [str(Path(sys.executable).parent / "ferry"), "up"]
        if self.agents:
            command += ["--agents", str(self.agents)]
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stop() can end every child
        )
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(self.start_timeout) or not any(s.startswith("portal: ") for s in self.lines):
            self.stop()
            raise RuntimeError(f"ferry up did not print its portal line:\n{''.join(self.lines[-30:])}")
        return self

    def _read(self, ready: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("portal: "):
                ready.set()
        ready.set()  # it exited

    def nats_admin(self) -> tuple[str, str] | None:
        """(user, password) of the `admin` NATS identity, when the embedded server requires one.

        `ferry up` writes one JSON credential per identity under FERRY_HOME (0600); an operator
        reads the same file. None when there is none (a server without authentication).
        """
        for path in sorted(self.home.rglob("admin.json")):
            try:
                data = json.loads(path.read_text())
                return str(data["user"]), str(data["password"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def restarts(self) -> list[str]:
        """Lines in which ferry up reported restarting a crashed service."""
        return [line.strip() for line in self.lines if "restarting" in line]

    def log_lines(self, *needles: str) -> list[str]:
        """Lines of the services' logs (FERRY_HOME/logs) holding any of `needles`."""
        found = []
        for path in sorted((self.home / "logs").glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(n in line for n in needles):
                    found.append(f"{path.name}: {line[:400]}")
        return found

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its group that outlived it
        except ProcessLookupError:
            pass
        if self._reader is not None:
            self._reader.join(5)


@dataclass
class Api:
    """The REST API through one client that counts every response >= 500 it sees."""

    base_url: str
    timeout: float = 30.0
    server_errors: list[str] = field(default_factory=list)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, event_hooks={"response": [self._count]}
        )

    def _count(self, response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            request = response.request
            self.server_errors.append(
                f"{request.method} {request.url.path} -> {response.status_code} {response.text[:200]}"
            )

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, body: dict[str, Any] | None = None, expect: int = 201) -> dict[str, Any]:
        r = self.client.post(path, json=body or {})
        if r.status_code != expect:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:500]}")
        data: dict[str, Any] = r.json()
        return data

    def get(self, path: str) -> dict[str, Any] | None:
        """The JSON body, or None when the gateway answered an error (counted when >= 500)."""
        r = self.client.get(path)
        if r.status_code != 200:
            return None
        data: dict[str, Any] = r.json()
        return data

    # --- registration -----------------------------------------------------------
    def add_hosts(self, hosts: list[SshdHost]) -> list[str]:
        """One credential and one pinned host per sshd host; returns the host names."""
        names = []
        for i, h in enumerate(hosts):
            self.post("/api/credentials", {"name": f"key{i}", "kind": "ssh_key", "secret": h.client_key_pem})
            body = {
                "name": f"host{i}",
                "address": h.address,
                "port": h.port,
                "user": "root",
                "credential": f"key{i}",
                "host_key": h.host_key_line,
                "host_key_policy": "pinned",
            }
            self.post("/api/hosts", body)
            names.append(f"host{i}")
        return names

    def add_project(self, name: str, repo_url: str, deploy_path: str, **extra: Any) -> None:
        body = {
            "name": name,
            "repo_url": repo_url,
            "deploy_path": deploy_path,
            "artifact_format": "zst",
            "keep_releases": 3,
            **extra,
        }
        self.post("/api/projects", body)

    def add_environment(self, project: str, name: str, hosts: list[str], concurrency: int) -> None:
        body = {"name": name, "hosts": hosts, "concurrency": concurrency}
        self.post(f"/api/projects/{project}/environments", body)

    # --- releases ----------------------------------------------------------------
    def release(self, project: str, environment: str, ref: str) -> str:
        body = {"project": project, "environment": environment, "ref": ref}
        return str(self.post("/api/releases", body, expect=202)["id"])

    def rollback(self, release_id: str) -> str:
        return str(self.post(f"/api/releases/{release_id}/rollback", expect=202)["id"])

    def wait(
        self, release_id: str, timeout: float, poll: float = 0.1, on_poll: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Poll GET /api/releases/{id} until terminal; raises TimeoutError with the last status seen."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if on_poll is not None:
                on_poll()
            view = self.get(f"/api/releases/{release_id}")
            if view is not None:
                last = view
                if view.get("status") in TERMINAL:
                    return view
            time.sleep(poll)  # the poll interval bounds the clock's resolution
        raise TimeoutError(f"release {release_id} not finished after {timeout:g}s: {last.get('status')}")

    def events(self, release_id: str) -> list[dict[str, Any]]:
        for _ in range(5):  # a 5xx is counted and tried again
            data = self.get(f"/api/releases/{release_id}/events")
            if data is not None:
                return [e["event"] for e in data["events"]]
        raise RuntimeError(f"cannot read the events of {release_id}")


class NatsProbe:
    """Consumer counts from the JetStream API over one nats-py connection on a thread of its own."""

    def __init__(self, url: str, credential: tuple[str, str] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="nats-probe")
        self.thread.start()
        auth: dict[str, Any] = {}
        if credential is not None:
            auth = {"user": credential[0], "password": credential[1], "inbox_prefix": "_INBOX.admin"}
        self.nc = self._run(nats.connect(url, connect_timeout=5, max_reconnect_attempts=3, **auth))
        self.js = self.nc.jetstream()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def consumers(self) -> tuple[int, int]:
        """(consumers on FERRY_EVENTS, consumers in the account)."""

        async def counts() -> tuple[int, int]:
            info = await self.js.stream_info(EVENTS_STREAM)
            account = await self.js.account_info()
            return info.state.consumer_count, account.consumers

        return self._run(counts())

    def per_stream(self) -> dict[str, int]:
        """Consumers of every stream in the account, by stream name."""

        async def counts() -> dict[str, int]:
            return {i.config.name or "?": i.state.consumer_count for i in await self.js.streams_info()}

        return self._run(counts())

    def close(self) -> None:
        try:
            self._run(self.nc.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
