"""Local OpenSSH hosts: one sshd per host on its own 127.0.0.N with a private /srv.

Used by `ferry up --demo` (a release target on this machine) and by the test harness.

Each `SshdHost` is one `/usr/sbin/sshd` listening on its own loopback address
127.0.0.N, with its own host key, inside its own mount namespace whose `/srv`
is a private bind mount of `<tmpdir>/srv` (so every host has its own deploy
path, and the test reads it through `srv_path`); its `/root` is private too.

The namespace is held by a small "machine" process (`sleep infinity` under
`unshare -m`) and sshd is entered into it with `nsenter`, so that restarting
sshd (e.g. after `rotate_host_key`) keeps the same namespace: daemons a
release started before the restart stay on "the same machine", and teardown
ends every process in that one namespace.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 10.0

_address_lock = threading.Lock()
_address_counter = itertools.count(10)


def harness_unavailable_reason() -> str | None:
    """Why real sshd hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "sshd hosts need root (mount namespaces, sshd privilege separation)"
    missing = [p for p in (SSHD,) if not os.path.exists(p)]
    missing += [t for t in ("unshare", "nsenter", "ssh-keygen") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install openssh-server util-linux)"
    return None


def _next_address() -> str:
    with _address_lock:
        n = next(_address_counter)
    # 127.0.0.10 .. 127.0.0.249, then wrap: hosts are short-lived, ports make pairs unique anyway.
    return f"127.0.0.{10 + (n - 10) % 240}"


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def pids_in_mount_namespace(ns: str) -> list[int]:
    """Every live process whose mount namespace is `ns` (a readlink of /proc/<pid>/ns/mnt)."""
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != own and _mount_ns(int(entry)) == ns:
            found.append(int(entry))
    return found


def _wait_for_banner(address: str, port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode} before accepting connections")
        try:
            with socket.create_connection((address, port), timeout=1.0) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last_error = exc
        time.sleep(0.02)  # poll interval, bounded by the deadline
    raise TimeoutError(f"sshd on {address}:{port} not ready: {last_error}")


class SshdHost:
    """One real sshd on 127.0.0.N:port in its own mount namespace with a private /srv."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, password: str | None = None) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ferry-sshd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = self.workdir.name
        self.password = password
        self._address = _next_address()
        self._port = _free_port(self._address)
        self._host_key = self.workdir / "ssh_host_ed25519_key"
        self._client_key = self.workdir / "client_ed25519_key"
        self._config = self.workdir / "sshd_config"
        self._log = self.workdir / "sshd.log"
        self._srv = self.workdir / "srv"
        self._srv.mkdir(exist_ok=True)
        self._machine: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None
        self._namespace: str | None = None
        self._started_once = False
        _keygen(self._host_key, f"host-{self.name}")
        _keygen(self._client_key, f"client-{self.name}")
        (self.workdir / "authorized_keys").write_text(Path(str(self._client_key) + ".pub").read_text())

    # --- properties ---------------------------------------------------------
    @property
    def address(self) -> str:
        return self._address

    @property
    def port(self) -> int:
        return self._port

    @property
    def host_key_line(self) -> str:
        """The public host key as 'ssh-ed25519 AAAA…' (no comment)."""
        kind, b64 = Path(str(self._host_key) + ".pub").read_text().split()[:2]
        return f"{kind} {b64}"

    @property
    def client_key_pem(self) -> str:
        return self._client_key.read_text()

    @property
    def srv_path(self) -> Path:
        """The real path of this host's private /srv."""
        return self._srv

    @property
    def namespace(self) -> str | None:
        """The host's mount namespace id ('mnt:[…]'), while running."""
        return self._namespace

    @property
    def sshd_pid(self) -> int | None:
        return self._sshd.pid if self._sshd is not None else None

    @property
    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def __repr__(self) -> str:
        return f"SshdHost({self._address}:{self._port}, srv={self._srv})"

    # --- lifecycle ----------------------------------------------------------
    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self._address}:{self._port}",
            f"HostKey {self._host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "PermitRootLogin yes" if self.password else "PermitRootLogin prohibit-password",
            f"PasswordAuthentication {'yes' if self.password else 'no'}",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "LogLevel VERBOSE",  # auth events, so tests can prove nothing logged in
            "Subsystem sftp internal-sftp",
        ]
        self._config.write_text("\n".join(lines) + "\n")

    def _start_machine(self) -> None:
        """Start the process that holds this host's mount namespace (private /srv, maybe /etc/shadow)."""
        Path("/srv").mkdir(exist_ok=True)
        # A private, empty /root too: the host does not inherit this machine's shell start-up files
        # (a pyenv init in ~/.bashrc cost ~80 ms per command) and anything it writes there stays its own.
        home = self.workdir / "root"
        home.mkdir(mode=0o700, exist_ok=True)
        mounts = [f"mount --bind {self._srv} /srv", f"mount --bind {home} /root"]
        if self.password:
            shadow = self.workdir / "shadow"
            hashed = (
                subprocess.run(
                    ["openssl", "passwd", "-6", "-stdin"],
                    input=self.password.encode(),
                    capture_output=True,
                    check=True,
                )
                .stdout.decode()
                .strip()
            )
            rows = []
            for row in Path("/etc/shadow").read_text().splitlines():
                fields = row.split(":")
                if fields[0] == "root":
                    fields[1] = hashed
                rows.append(":".join(fields))
            shadow.write_text("\n".join(rows) + "\n")
            shadow.chmod(0o640)
            mounts.append(f"mount --bind {shadow} /etc/shadow")
        script = " && ".join([*mounts, "echo ready", "exec sleep infinity"])
        self._machine = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self._machine.stdout is not None
        first = self._machine.stdout.readline()  # returns at "ready" or at exit
        if first.strip() != b"ready":
            rest = self._machine.stdout.read() if self._machine.poll() is not None else b""
            self._machine.kill()
            self._machine.wait(5)
            raise RuntimeError(f"cannot create the host namespace: {(first + rest).decode(errors='replace')}")
        self._namespace = _mount_ns(self._machine.pid)

    def start(self) -> SshdHost:
        if self._sshd is not None and self._sshd.poll() is None:
            return self
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        if self._machine is None or self._machine.poll() is not None:
            self._start_machine()
        # The free port was only free when we looked; on a first start another process may have
        # taken it since, so pick another. A restart must keep its port and never moves.
        for attempt in range(1 if self._started_once else 3):
            log_offset = self._log.stat().st_size if self._log.exists() else 0
            try:
                self._start_sshd()
                break
            except RuntimeError:
                taken = "Address already in use" in self.log_text[log_offset:]
                if not taken or self._started_once or attempt == 2:
                    self.stop()
                    raise
                self._port = _free_port(self._address)
        self._started_once = True
        return self

    def _start_sshd(self) -> None:
        assert self._machine is not None
        self._write_config()
        with self._log.open("ab") as log:
            self._sshd = subprocess.Popen(
                ["nsenter", "-t", str(self._machine.pid), "-m", SSHD, "-D", "-e", "-f", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            _wait_for_banner(self._address, self._port, self._sshd, time.monotonic() + READY_TIMEOUT)
        except Exception as exc:
            self._stop_sshd()
            raise RuntimeError(f"{self!r}: {exc}\n{self.log_text}") from exc

    def _stop_sshd(self) -> None:
        """Stop the listening sshd only (like `systemctl restart ssh`); sessions and daemons stay."""
        proc, self._sshd = self._sshd, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def restart(self) -> SshdHost:
        """Restart sshd on the same address and port, in the same namespace."""
        self._stop_sshd()
        return self.start()

    def rotate_host_key(self) -> str:
        """Give the host a new host key and restart sshd; returns the new key line."""
        _keygen(self._host_key, f"host-{self.name}-rotated")
        self.restart()
        return self.host_key_line

    def leftover_pids(self) -> list[int]:
        return pids_in_mount_namespace(self._namespace) if self._namespace else []

    def stop(self) -> None:
        """End every process on this host: sshd, sessions, and daemons a release started."""
        self._stop_sshd()
        ns = self._namespace
        if ns is not None:
            # The namespace holder (``_machine``) dies last: while it lives the namespace does too,
            # so its inode number cannot be reused by another host's new namespace, whose
            # processes a later scan would otherwise find and kill.
            holder = self._machine.pid if self._machine is not None and self._machine.poll() is None else None
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                pids = [pid for pid in pids_in_mount_namespace(ns) if pid != holder]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)  # poll until the kernel reaped them, bounded by the deadline
            else:
                raise RuntimeError(f"{self!r}: processes survived teardown: {pids}")
        if self._machine is not None:
            if self._machine.poll() is None:
                self._machine.kill()
            self._machine.wait(5)
            if self._machine.stdout is not None:
                self._machine.stdout.close()
            self._machine = None

    def cleanup(self) -> None:
        """stop() and remove the working directory if the host created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SshdHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
