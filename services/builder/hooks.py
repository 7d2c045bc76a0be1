"""Run a project's build hooks: shell commands from its configuration, one after another.

Synchronous on purpose (the worker calls it through ``asyncio.to_thread``). Each hook runs
in a sandbox (services/builder/sandbox.py) and in its own process group, so a timeout, or the
end of the hook, takes every process it started with it: nothing a hook left running can hold
the work tree or the log. The log keeps at most the sandbox's ``log_limit`` bytes (the events
keep each hook's tail), so a hook printing without end costs time, never memory or disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ferry.domain.errors import BuildError
from ferry.domain.masking import Masker
from services.builder.sandbox import Sandbox, prepare_tree

TAIL_BYTES = 4096
TIMEOUT_EXIT_CODE = 124  # what coreutils' timeout(1) returns
_DRAIN_GRACE = 1.0  # seconds to keep reading after a hook's process group is gone
_CUT_NOTICE = b"\nferry: log truncated here (size limit reached); each hook's tail is in its event\n"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HookResult:
    index: int
    command: str
    exit_code: int
    duration: float
    output_tail: str  # the last TAIL_BYTES of the hook's combined stdout and stderr
    log_bytes: int  # bytes this hook appended to the log (its "$ command" header included)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.exit_code == TIMEOUT_EXIT_CODE


def base_env() -> dict[str, str]:
    """The minimal environment every hook starts from."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
    }


def run_hooks(
    commands: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    log_path: Path,
    sandbox: Sandbox | None = None,
    network: bool = True,
    secrets: Mapping[str, str] | None = None,
) -> list[HookResult]:
    """Run each command with ``/bin/sh -c`` in ``cwd``; stop after the first that fails.

    ``env`` is added to :func:`base_env`. ``secrets`` (the project's secret variables) are added
    too, under ``env``, and every occurrence of their values in the log, the tails and the
    commands shown is replaced by ``***`` before it is written. ``timeout`` applies to each hook.
    Every hook's output (stdout and stderr interleaved) is appended to ``log_path`` after a
    ``$ <command>`` line.
    ``sandbox`` defaults to the bubblewrap sandbox; when it cannot run here, BuildError says why
    and nothing runs. ``network=False`` gives the hooks a network namespace of their own.
    """
    if timeout <= 0:
        raise BuildError("hook timeout must be positive")
    secrets = dict(secrets or {})
    for name, value in {**env, **secrets}.items():
        if not _ENV_NAME.match(name) or "\0" in value:
            raise BuildError(f"invalid environment variable name or value: {name!r}")
    if any("\0" in command for command in commands):
        raise BuildError("a build hook contains a NUL character")
    sandbox = sandbox if sandbox is not None else Sandbox()
    results: list[HookResult] = []
    if not commands:
        return results
    problem = sandbox.problem()
    if problem is not None:
        raise BuildError(problem)
    sandbox.warn_if_off()
    full_env = sandbox.environment({**base_env(), **secrets, **env})
    masker = Masker(secrets.values())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as file:
        log = _CappedLog(file, sandbox.log_limit - file.tell())
        if cwd.is_dir():
            prepare_tree(cwd, sandbox.owner())
        for index, command in enumerate(commands):
            argv = sandbox.command(command, cwd=cwd, timeout=timeout, network=network)
            result = _run_one(
                index, command, argv, cwd=cwd, env=full_env, timeout=timeout, log=log, masker=masker
            )
            results.append(result)
            if result.exit_code != 0:
                break
    return results


class _CappedLog:
    """Appends to the log until ``budget`` bytes are written, then notes the cut once and drops the rest."""

    def __init__(self, file: BinaryIO, budget: int) -> None:
        self.file = file
        self.budget = max(budget, 0)
        self.cut = False

    def write(self, data: bytes) -> int:
        keep = data[: self.budget]
        if keep:
            self.file.write(keep)
            self.budget -= len(keep)
        if len(keep) == len(data) or self.cut:
            return len(keep)
        self.cut = True
        return len(keep) + self.file.write(_CUT_NOTICE)

    def flush(self) -> None:
        self.file.flush()


def _run_one(
    index: int,
    command: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    log: _CappedLog,
    masker: Masker,
) -> HookResult:
    command = masker.text(command)  # as shown in the log and the events
    written = log.write(f"$ {command}\n".encode())
    tail = bytearray()
    masked = masker.stream()  # holds back a possible secret's beginning until the next chunk

    def write(data: bytes) -> None:
        nonlocal written
        written += log.write(data)
        tail.extend(data)
        del tail[:-TAIL_BYTES]

    def emit(data: bytes) -> None:
        write(masked.feed(data))

    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:  # e.g. cwd missing
        write(f"ferry: cannot start hook: {exc.strerror}\n".encode())
        log.flush()
        return HookResult(index, command, 127, 0.0, _text(tail), written)

    assert process.stdout is not None
    deadline = started + timeout
    timed_out = False
    exited_at: float | None = None
    eof = False
    stdout_fd = process.stdout.fileno()
    os.set_blocking(stdout_fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(stdout_fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if exited_at is None:
                # waitid(WNOWAIT) does not reap: until the shell is reaped its pid, which is the
                # group id, cannot be reused, so killing the group cannot hit a stranger.
                if _has_exited(process.pid):
                    _kill_group(process.pid)  # whatever the hook left running in the background
                    exited_at = now
                elif now >= deadline:
                    timed_out = True
                    _kill_group(process.pid)
                    exited_at = now
            if exited_at is not None and (eof or now - exited_at > _DRAIN_GRACE):
                break  # after the grace, something outside the group holds the pipe: stop waiting
            wait = 0.05 if exited_at is not None else max(min(deadline - now, 0.05), 0.0)
            if eof:
                time.sleep(wait)
                continue
            if not selector.select(wait):
                continue
            try:
                chunk = os.read(stdout_fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                emit(chunk)
            else:
                eof = True
                selector.unregister(stdout_fd)
    process.stdout.close()
    write(masked.flush())
    exit_code = process.wait()
    duration = time.monotonic() - started
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
        write(f"\nferry: hook timed out after {timeout:g}s; its process group was killed\n".encode())
    elif exit_code < 0:  # killed by a signal: report it the way a shell would
        write(f"\nferry: hook killed by signal {-exit_code}\n".encode())
        exit_code = 128 - exit_code
    log.flush()
    return HookResult(index, command, exit_code, duration, _text(tail), written)


def _has_exited(pid: int) -> bool:
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _text(tail: bytearray) -> str:
    data = bytes(tail)
    # Drop a partial UTF-8 character the cut may have left at the front.
    start = 0
    while start < min(len(data), 3) and (data[start] & 0xC0) == 0x80:
        start += 1
    return data[start:].decode("utf-8", "replace")
