"""One SSH connection per host (paramiko), reused for every step of that host.

Host keys are pinned: the connection is refused before authenticating when the
host presents any key other than the pinned one. Errors are translated into
ferry's hierarchy here, once.
"""

from __future__ import annotations

import re
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import paramiko

from ferry.domain.errors import (
    AuthenticationFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
    InvalidInput,
)
from ferry.domain.validation import key_fingerprint as key_fingerprint  # re-exported: callers import it here
from ferry.infra.sshkeys import load_private_key as load_private_key

OUTPUT_LIMIT = 64 * 1024
TIMEOUT_EXIT_CODE = 124
NO_STATUS_EXIT_CODE = 255
# Fastest first: AES-GCM took one stream from ~158 to ~215 MB/s on loopback (see DESIGN.md).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_CHUNK = 256 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class SSHTarget:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    private_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_key: str | None = None  # pinned "type base64" line
    trust_on_first_use: bool = False


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    output: str  # stdout and stderr merged, the last OUTPUT_LIMIT bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _parse_key_line(line: str) -> tuple[str, str]:
    """'type base64 [comment]' or known_hosts style 'host type base64' -> (type, base64)."""
    parts = line.split()
    if len(parts) >= 3 and not _looks_like_key_type(parts[0]) and _looks_like_key_type(parts[1]):
        parts = parts[1:]
    if len(parts) < 2:
        raise InvalidInput("host key must be 'type base64'", field="host_key")
    return parts[0], parts[1]


def _looks_like_key_type(token: str) -> bool:
    return token.startswith(("ssh-", "ecdsa-", "sk-", "rsa-"))


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Accept only the pinned key; with trust-on-first-use and nothing pinned, record what the host shows.

    paramiko calls this after key exchange and before authentication, so a refused key means
    no credentials were offered and nothing ran.
    """

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.observed: str | None = None
        self.trusted_on_first_use = False

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        presented = key_line(key)
        if self.target.host_key is None:
            if not self.target.trust_on_first_use:
                raise HostKeyUnknown(
                    self.target.name,
                    f"no host key pinned and trust on first use is off; host presented {presented}",
                )
            self.observed = presented
            self.trusted_on_first_use = True
            return
        pinned = _parse_key_line(self.target.host_key)
        if (key.get_name(), key.get_base64()) != pinned and not _same_rsa(pinned, key):
            raise HostKeyMismatch(
                self.target.name,
                f"host key changed: pinned {pinned[0]} {key_fingerprint(pinned[1])}, "
                f"presented {key.get_name()} {key_fingerprint(key.get_base64())}",
            )
        self.observed = presented


def _same_rsa(pinned: tuple[str, str], key: paramiko.PKey) -> bool:
    # An RSA key pinned as "ssh-rsa" may be negotiated as rsa-sha2-*; the key blob is what matters.
    return pinned[0] in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512") and pinned[1] == key.get_base64()


def _transport_factory(pinned_type: str | None) -> Any:
    def factory(sock: socket.socket, disabled_algorithms: Any = None) -> paramiko.Transport:
        # Without TCP_NODELAY every request/reply round trip waits ~40 ms for delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
        options = transport.get_security_options()
        offered = tuple(options.ciphers)
        fast = tuple(c for c in PREFERRED_CIPHERS if c in offered)
        options.ciphers = fast + tuple(c for c in offered if c not in fast)
        if pinned_type is not None:
            # Ask for the pinned key type first, so a host with several keys shows the pinned one.
            wanted = ("rsa-sha2-512", "rsa-sha2-256") if pinned_type == "ssh-rsa" else (pinned_type,)
            types = tuple(options.key_types)
            first = tuple(t for t in wanted if t in types)
            options.key_types = first + tuple(t for t in types if t not in first)
        return transport

    return factory


def env_prefix(env: Mapping[str, str] | None) -> str:
    """`export K='v'; …` (sshd's AcceptEnv is usually off, so env travels in the command)."""
    if not env:
        return ""
    parts = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise InvalidInput(f"invalid environment variable name {name!r}", field="env")
        parts.append(f"export {name}={shlex.quote(str(value))}; ")
    return "".join(parts)


def build_command(command: str, *, env: Mapping[str, str] | None, cwd: str | None) -> str:
    script = env_prefix(env)
    if cwd is not None:
        script += f"cd {shlex.quote(cwd)} || exit 1; "
    return script + command


class _Tail:
    """Keeps the last `limit` bytes of a stream."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.limit:
            del self.buf[: len(self.buf) - self.limit]
            self.truncated = True

    def text(self) -> str:
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]
            self.truncated = True
        body = self.buf.decode("utf-8", errors="replace")
        if self.truncated:
            return f"[ferry] output truncated, last {self.limit // 1024} KiB follow\n" + body
        return body


class HostSession:
    """An authenticated SSH connection to one host; use as a context manager."""

    def __init__(self, target: SSHTarget, client: paramiko.SSHClient, policy: PinnedHostKeyPolicy) -> None:
        self.target = target
        self._client = client
        self._policy = policy
        self._sftp: paramiko.SFTPClient | None = None

    # --- connecting ---------------------------------------------------------
    @classmethod
    def connect(cls, target: SSHTarget, *, timeout: float = 10.0) -> HostSession:
        pkey = load_private_key(target.private_key) if target.private_key else None
        if pkey is None and target.password is None:
            raise InvalidInput(f"{target.name}: neither a private key nor a password", field="private_key")
        pinned_type = _parse_key_line(target.host_key)[0] if target.host_key else None
        policy = PinnedHostKeyPolicy(target)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(
                target.address,
                port=target.port,
                username=target.user,
                pkey=pkey,
                password=target.password,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
                transport_factory=_transport_factory(pinned_type),
            )
        except (HostKeyMismatch, HostKeyUnknown):
            client.close()
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthenticationFailed(target.name, str(exc) or "authentication failed") from exc
        except TimeoutError as exc:
            client.close()
            raise HostUnreachable(target.name, f"timed out after {timeout:g}s connecting") from exc
        except (OSError, EOFError) as exc:
            client.close()
            raise HostUnreachable(target.name, str(exc) or type(exc).__name__) from exc
        except paramiko.SSHException as exc:
            client.close()
            raise HostUnreachable(target.name, str(exc) or type(exc).__name__) from exc
        return cls(target, client, policy)

    @property
    def observed_host_key(self) -> str | None:
        """The key line the host presented; persist it when `trusted_on_first_use`."""
        return self._policy.observed

    @property
    def trusted_on_first_use(self) -> bool:
        return self._policy.trusted_on_first_use

    @property
    def cipher(self) -> str | None:
        transport = self._client.get_transport()
        return getattr(transport, "local_cipher", None)

    def _transport_alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(self.target.name, "connection closed")
        return transport

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self._client.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands -----------------------------------------------------------
    def _open_channel(self, timeout: float) -> paramiko.Channel:
        try:
            return self._transport().open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(self.target.name, f"cannot open a channel: {exc}") from exc

    def _exec(self, command: str, timeout: float) -> tuple[paramiko.Channel, float]:
        chan = self._open_channel(min(timeout, 30.0))
        chan.set_combine_stderr(True)
        # `timeout` on the host ends the command's process group even if our channel dies;
        # daemons that setsid'ed away (a restarted service) are left alone, as intended.
        wrapped = f"timeout -k 5 {max(timeout, 0.001):.3f} sh -c {shlex.quote(command)} 2>&1"
        try:
            chan.exec_command(wrapped)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            raise HostUnreachable(self.target.name, f"cannot run a command: {exc}") from exc
        return chan, time.monotonic() + timeout + 2.0  # the agent-side deadline, a bit past the host's

    def _collect(self, chan: paramiko.Channel, deadline: float, started: float, tail: _Tail) -> CommandResult:
        timed_out = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                chan.settimeout(min(remaining, 1.0))
                try:
                    data = chan.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                tail.add(data)
            if not timed_out and not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                timed_out = True
            exit_code = chan.exit_status if not timed_out else TIMEOUT_EXIT_CODE
            if exit_code < 0 and not self._transport_alive():
                # The connection died under the command: its fate is unknown, and that is transient.
                raise HostUnreachable(self.target.name, "connection lost during a command")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(self.target.name, f"connection lost during a command: {exc}") from exc
        finally:
            chan.close()
        output = tail.text()
        elapsed = time.monotonic() - started
        if timed_out or (exit_code == TIMEOUT_EXIT_CODE and elapsed >= deadline - started - 2.0):
            exit_code = TIMEOUT_EXIT_CODE
            output += f"\n[ferry] command timed out after {elapsed:.1f}s and was killed\n"
        elif exit_code < 0:
            exit_code = NO_STATUS_EXIT_CODE
            output += "\n[ferry] command ended without an exit status (killed by a signal?)\n"
        return CommandResult(exit_code, output, time.monotonic() - started)

    def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float,
    ) -> CommandResult:
        """Run a shell command; output is stdout+stderr merged; a timeout gives exit code 124."""
        started = time.monotonic()
        chan, deadline = self._exec(build_command(command, env=env, cwd=cwd), timeout)
        chan.shutdown_write()
        return self._collect(chan, deadline, started, _Tail())

    def stream_to_command(
        self,
        fileobj: IO[bytes],
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 600.0,
    ) -> tuple[CommandResult, int]:
        """Write `fileobj` into the stdin of `command` (a tar into `tar -x`); returns (result, bytes sent)."""
        started = time.monotonic()
        chan, deadline = self._exec(build_command(command, env=env, cwd=cwd), timeout)
        sent = 0
        tail = _Tail()
        try:
            while True:
                chunk = fileobj.read(_CHUNK)
                if not chunk:
                    break
                chan.settimeout(max(0.001, deadline - time.monotonic()))
                chan.sendall(chunk)
                sent += len(chunk)
                while chan.recv_ready():  # never let the command block on its own output
                    tail.add(chan.recv(_CHUNK))
            chan.shutdown_write()
        except TimeoutError:
            pass  # _collect reports the timeout
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited early (e.g. tar failed); its output and status say why
        return self._collect(chan, deadline, started, tail), sent

    # --- files --------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostUnreachable(self.target.name, f"cannot start SFTP: {exc}") from exc
            if self._sftp is None:
                raise HostUnreachable(self.target.name, "cannot start SFTP")
        return self._sftp

    def upload(self, fileobj: IO[bytes], remote_path: str, size: int | None = None) -> int:
        """Pipelined SFTP upload of a stream to `remote_path`; returns the bytes written.

        A lost connection raises HostUnreachable; a remote file error (no such directory, disk full)
        or a stream shorter than `size` raises OSError, for the caller's step to report.
        """
        sftp = self.sftp()
        try:
            attrs = sftp.putfo(fileobj, remote_path, file_size=size or 0, confirm=True)
        except OSError:
            self._transport()  # raises HostUnreachable when the connection itself is gone
            raise  # a remote file error (no such directory, disk full): the caller's step fails
        except (paramiko.SSHException, EOFError) as exc:
            raise HostUnreachable(self.target.name, f"upload failed: {exc}") from exc
        written = int(attrs.st_size or 0)
        if size is not None and written != size:
            raise OSError(f"upload of {remote_path} wrote {written} of {size} bytes")  # a short stream
        return written
