"""Where build hooks run: a bubblewrap sandbox as a dedicated unprivileged user.

A build hook is code from the repository (a Makefile, an ``npm install``), so it runs away from
everything the builder holds: its own mount, PID, IPC and UTS namespaces (``bwrap``) in which
only the system's read-only directories (/usr, /etc, the lib dirs) and the exported tree exist;
``FERRY_HOME`` (the key, the database, the NATS credentials, every project's mirror and
artifact) is simply not there, and the builder's processes are not in its /proc. As root, the
builder switches to the hook user (``ferry-hook``, created by ``make system-deps``) inside the
sandbox with every capability dropped; a builder that is not root cannot switch users, so it
runs hooks in a user namespace instead (same isolation of files and processes, but the host
sees the builder's uid: run the builder as root to get a uid of its own). ``prlimit`` caps CPU
time, file size, processes and core dumps; a recipe can turn the network off.

``FERRY_HOOK_SANDBOX=off`` runs hooks unsandboxed, as the builder's user; it is refused unless
set explicitly, and logged as a warning at every build.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from ferry.domain.errors import BuildError
from ferry.infra.settings import Settings

log = logging.getLogger("ferry.builder.sandbox")

HOOK_USER = "ferry-hook"
BUILD_DIR = "/build"  # where the exported tree appears inside the sandbox
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_LIMIT = 8 * 1024 * 1024
MAX_FILE_SIZE = 2 * 1024 * 1024 * 1024
MAX_PROCESSES = 1024
MAX_OPEN_FILES = 4096
# System directories a build needs, bound read-only when present (symlinks, as on merged-/usr
# systems, are recreated as symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Never visible, even when an operator binds a directory that holds them.
ALWAYS_HIDDEN = ("/etc/ferry",)


@dataclass(frozen=True)
class Sandbox:
    """How hooks are isolated. ``enabled=False`` is the explicit, logged ``FERRY_HOOK_SANDBOX=off``."""

    enabled: bool = True
    user: str = HOOK_USER
    hidden: tuple[Path, ...] = ()
    """Paths that must not be visible inside (FERRY_HOME, the database file...), hidden if bound."""
    extra_ro: tuple[Path, ...] = ()
    """More read-only directories for hooks (``FERRY_HOOK_BIND_RO``, colon-separated)."""
    log_limit: int = LOG_LIMIT
    max_file_size: int = MAX_FILE_SIZE
    max_processes: int = MAX_PROCESSES

    @classmethod
    def from_settings(cls, settings: Settings, hidden: tuple[Path, ...] = ()) -> Sandbox:
        mode = settings.hook_sandbox.strip().lower()
        if mode not in ("bwrap", "off"):
            raise BuildError(f"FERRY_HOOK_SANDBOX must be 'bwrap' or 'off', not {mode!r}")
        return cls(
            enabled=mode != "off",
            user=settings.hook_user or HOOK_USER,
            hidden=hidden,
            extra_ro=settings.hook_bind_ro,
            log_limit=settings.hook_log_limit,
            max_file_size=settings.hook_max_file_size,
        )

    @classmethod
    def from_env(cls, hidden: tuple[Path, ...] = ()) -> Sandbox:
        return cls.from_settings(Settings.from_env(), hidden)

    def problem(self) -> str | None:
        """Why hooks cannot run sandboxed here (and what to do), or None when they can."""
        if not self.enabled:
            return None
        for tool in ("bwrap", "setpriv", "prlimit"):
            if shutil.which(tool) is None:
                return (
                    f"build hooks need `{tool}` to run sandboxed and it is not installed "
                    "(run `make system-deps`, or apt-get install bubblewrap util-linux); "
                    "FERRY_HOOK_SANDBOX=off runs them unsandboxed, as the builder's own user"
                )
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                return (
                    f"the build hook user {self.user!r} does not exist: create it with "
                    f"`make system-deps` (useradd --system --user-group {self.user})"
                )
            if entry.pw_uid == 0 or entry.pw_gid == 0:
                return f"the build hook user {self.user!r} must not be root (uid/gid 0)"
        return None

    def owner(self) -> tuple[int, int] | None:
        """The uid and gid that must own the exported tree, or None (the builder's own)."""
        if not self.enabled or os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def command(self, shell_command: str, *, cwd: Path, timeout: float, network: bool) -> list[str]:
        """The argv that runs ``/bin/sh -c shell_command`` in ``cwd`` (the tree), sandboxed or not."""
        shell = ["/bin/sh", "-c", shell_command]
        if not self.enabled:
            return shell
        argv = ["bwrap", "--die-with-parent", "--new-session"]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not network:
            argv.append("--unshare-net")
        argv += _system_mounts()
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]
        for path in self.extra_ro:  # after the tmpfs mounts, which would cover them
            if path.is_dir():
                argv += ["--ro-bind", str(path), str(path)]
        argv += _hide(self.hidden, (*SYSTEM_DIRS, *map(str, self.extra_ro)))
        argv += ["--bind", str(cwd), BUILD_DIR, "--chdir", BUILD_DIR, "--hostname", "ferry-build"]
        owner = self.owner()
        if owner is None:  # not root: a user namespace maps us to "nobody" inside
            argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--"]
        else:
            uid, gid = owner
            argv += ["--", "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        cpu = max(int(timeout) + 1, 1)
        argv += [
            "prlimit",
            f"--cpu={cpu}",
            f"--fsize={self.max_file_size}",
            f"--nproc={self.max_processes}",
            f"--nofile={MAX_OPEN_FILES}",
            "--core=0",
            "--",
        ]
        return argv + shell

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The hook's environment as seen inside (HOME and TMPDIR point into the sandbox's tmpfs)."""
        if not self.enabled:
            return env
        return {**env, "PATH": SANDBOX_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "PWD": BUILD_DIR}

    def warn_if_off(self) -> None:
        if not self.enabled:
            log.warning(
                "FERRY_HOOK_SANDBOX=off: build hooks run UNSANDBOXED as the builder's own user and "
                "can read FERRY_HOME (the secret key, the database, NATS credentials, mirrors)"
            )
        elif os.geteuid() != 0:
            log.warning(
                "the builder is not root: build hooks run in a user namespace under the builder's "
                "uid, not as the dedicated %r user",
                self.user,
            )


def prepare_tree(tree: Path, owner: tuple[int, int] | None) -> None:
    """Give the exported tree to the hook user (lchown: a committed symlink is never followed)."""
    if owner is None:
        return
    uid, gid = owner
    os.chown(tree, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _system_mounts() -> list[str]:
    argv: list[str] = []
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            argv += ["--ro-bind", name, name]
    return argv


def _hide(hidden: tuple[Path, ...], bound: tuple[str, ...]) -> list[str]:
    """Cover each hidden path that lies under a bound directory: an empty tmpfs or /dev/null."""
    argv: list[str] = []
    for raw in (*hidden, *map(Path, ALWAYS_HIDDEN)):
        path = Path(os.path.realpath(raw))
        if not path.exists() or not any(path.is_relative_to(b) for b in bound):
            continue
        argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return argv
