"""``ferry up``: nats-server (embedded unless FERRY_NATS_URL), migrations, and the four services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ferry.domain.errors import StoreUnavailable
from ferry.infra.natsauth import (
    SERVICE_IDENTITY,
    Credential,
    credential_path,
    private_dir,
    without_userinfo,
)
from ferry.infra.secrets import SecretBox
from ferry.infra.settings import Settings
from ferry.infra.signing import ensure_signing_key
from ferry.local.healthprobe import HealthProbe
from ferry.local.natsserver import NatsServer

SERVICES = ("gateway", "builder", "agent", "notifier")
MAX_RESTARTS = 5  # per service within RESTART_WINDOW, then ferry up gives up
RESTART_WINDOW = 60.0


class LaunchError(Exception):
    pass


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Launcher:
    def __init__(
        self, settings: Settings, *, demo: bool = False, agents: int = 1, echo: Callable[[str], None] = print
    ):
        self.settings = settings
        self.demo = demo
        self.agents = max(agents, 1)
        self.echo = echo
        self.nats: NatsServer | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.on_stop: list[Callable[[], None]] = []
        self.extra_env: dict[str, str] = {}
        self.agent_env: dict[str, dict[str, str]] = {}
        """Environment for one agent by name (e.g. ``{"agent-2": {"FERRY_AGENT_GROUP": "eu"}}``)."""
        self._env: dict[str, str] = {}
        self._restarts: dict[str, list[float]] = {}
        self._stopping = False

    def credential_file(self, service: str) -> Path | None:
        """The service's own NATS credential, when the credentials directory holds one."""
        path = credential_path(self.settings.credentials_dir, SERVICE_IDENTITY[service])
        return path if path.exists() else None

    def env(self, nats_url: str) -> dict[str, str]:
        env = dict(os.environ, **self.extra_env)
        if self.credential_file("gateway") is not None:
            # each service gets its own identity (FERRY_NATS_CREDS in spawn), never the URL's
            nats_url = without_userinfo(nats_url)
        env.update(
            FERRY_HOME=str(self.settings.home),
            FERRY_NATS_URL=nats_url,
            FERRY_NATS_CREDENTIALS_DIR=str(self.settings.credentials_dir),
            FERRY_WORK_SIGNING_KEY=str(self.settings.signing_key_path),
            FERRY_WORK_PUBLIC_KEY=str(self.settings.public_key_path),
            FERRY_DATABASE_URL=self.settings.db_url,
            FERRY_HTTP_PORT=str(self.settings.http_port),
            FERRY_WS_PORT=str(self.settings.ws_port),
            FERRY_HTTP_HOST=self.settings.http_host,
        )
        env["FERRY_STREAM_REPLICAS"] = str(self.settings.stream_replicas)
        if self.settings.nats_ca is not None:  # tls:// servers (a cluster) signed by a private CA
            env["FERRY_NATS_CA"] = str(self.settings.nats_ca)
        if self.settings.auth:
            env["FERRY_AUTH"] = self.settings.auth
        if self.settings.bootstrap_token:
            env["FERRY_BOOTSTRAP_TOKEN"] = self.settings.bootstrap_token
        return env

    def start(self, timeout: float = 60.0) -> str:
        from ferry.db.engine import upgrade

        home = private_dir(self.settings.home)
        if self.settings.nats_url:
            nats_url = self.settings.nats_url
        else:
            # A single embedded node fsyncs every write: acknowledged events survive power loss
            # (JetStream's default interval sync can lose them; see docs/operations.md).
            sync = self.settings.nats_sync == "always"
            self.nats = NatsServer(
                home / "nats",
                port=self.settings.nats_port,
                sync_always=sync,
                credentials_dir=self.settings.credentials_dir,
            )
            self.nats.start()
            nats_url = self.nats.address
        upgrade(self.settings.db_url)
        SecretBox.from_settings(self.settings)  # create the key file once, before any service reads it
        ensure_signing_key(self.settings.signing_key_path)  # the gateway's; builder and agents read .pub
        env = self.env(nats_url)
        logs_dir = home / "logs"
        logs_dir.mkdir(exist_ok=True)
        names = ["gateway", "builder", *[f"agent-{i + 1}" for i in range(self.agents)], "notifier"]
        self._env = env
        for name in names:
            self.spawn(name)
        host = self.settings.http_host
        gateway = f"http://{host}:{self.settings.http_port}/"
        notifier = f"http://{host}:{self.settings.ws_port}/healthz"
        deadline = time.monotonic() + timeout
        pending = set(SERVICES)
        # builder and agents answer on NATS only: asked the way they connect (cluster, TLS, identity)
        creds = self.credential_file("gateway")
        probe = HealthProbe(nats_url, Credential.read(creds) if creds else None, self.settings.nats_ca)
        try:
            while pending and time.monotonic() < deadline:
                self.check_children()
                if "gateway" in pending and _http_ok(gateway + "healthz"):
                    pending.discard("gateway")
                if "notifier" in pending and _http_ok(notifier):
                    pending.discard("notifier")
                if workers := tuple(s for s in ("builder", "agent") if s in pending):
                    pending -= probe.healthy(workers)
                if pending:
                    time.sleep(0.2)
        finally:
            probe.close()
        if not pending and self.settings.auth_required:
            self.echo(
                "authentication is on (FERRY_AUTH, or a non-loopback FERRY_HTTP_HOST): sign in with a "
                "token from `ferry token create NAME --role admin`"
            )
        if pending:
            unreachable = f"; the health probe could not reach NATS: {probe.error}" if probe.error else ""
            raise LaunchError(
                f"services not healthy within {timeout:.0f}s: {', '.join(sorted(pending))} "
                f"(logs in {logs_dir}){unreachable}"
            )
        return gateway

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or start again) one service process; agents are named agent-N."""
        service = name.split("-")[0]
        env = dict(self._env)
        if (creds := self.credential_file(service)) is not None:
            env["FERRY_NATS_CREDS"] = str(creds)
        if service == "agent":
            env = {**env, **self.agent_env.get(name, {}), "FERRY_AGENT_NAME": name}
        with open(self.settings.home / "logs" / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path.cwd(),
            )
        self.procs[name] = proc
        return proc

    def check_children(self) -> None:
        if self.nats is not None and (code := self.nats.exit_code) is not None and not self._stopping:
            raise LaunchError(
                f"nats-server exited with code {code}; see {self.nats.store_dir / 'nats-server.log'}"
            )
        for name, proc in self.procs.items():
            if proc.poll() is not None and not self._stopping:
                raise LaunchError(
                    f"{name} exited with code {proc.returncode}; see "
                    f"{self.settings.home / 'logs' / (name + '.log')}"
                )

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        while self.on_stop:
            try:
                self.on_stop.pop()()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                self.echo(f"error while stopping: {exc}")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.nats is not None:
            self.nats.stop()

    def _may_restart(self, name: str, code: int | None, now: float) -> None:
        """Count one restart of ``name``; give up on one that keeps dying."""
        recent = [t for t in self._restarts.get(name, []) if now - t < RESTART_WINDOW]
        if len(recent) >= MAX_RESTARTS:
            log = self.nats.store_dir / "nats-server.log" if name == "nats-server" and self.nats else None
            raise LaunchError(
                f"{name} exited with code {code} {len(recent)} times within {RESTART_WINDOW:.0f}s; "
                f"see {log or self.settings.home / 'logs' / (name + '.log')}"
            )
        self._restarts[name] = [*recent, now]

    def restart_crashed(self, now: float) -> None:
        """Start again nats-server or any service that died on its own; give up on one that keeps dying.

        nats-server comes back on the same store, port and credentials, so the services'
        clients reconnect to it and carry on (none of them is restarted for it).
        """
        if self._stopping:
            return
        if self.nats is not None and (code := self.nats.exit_code) is not None:
            self._may_restart("nats-server", code, now)
            self.echo(f"nats-server exited with code {code}; restarting it on {self.nats.address}")
            try:
                self.nats.start()
            except StoreUnavailable as exc:  # counted above; tried again on the next round
                self.echo(f"nats-server did not come back: {exc}")
        for name, proc in list(self.procs.items()):
            if proc.poll() is None or self._stopping:
                continue
            self._may_restart(name, proc.returncode, now)
            self.echo(f"{name} exited with code {proc.returncode}; restarting it")
            self.spawn(name)

    def supervise(self, stop: threading.Event, every: float = 0.2) -> None:
        """Restart what crashes until ``stop`` is set (``ferry up`` runs this; tests run it in a thread)."""
        while not stop.wait(every):
            self.restart_crashed(time.monotonic())

    def serve_forever(self) -> int:
        stop = threading.Event()

        def on_signal(_signum: int, _frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            self.supervise(stop)
            return 0
        except LaunchError as exc:
            self.echo(f"error: {exc}")
            return 1
        finally:
            self.stop()
