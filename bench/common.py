"""Helpers shared by the benchmarks: synthetic payloads, local sshd hosts, ssh client files, timing.

Nothing here asserts anything about speed; the benchmarks print figures and ratios.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ferry.local.localsshd import SshdHost, harness_unavailable_reason  # noqa: E402

WORDS = (
    "release build deploy host commit branch artifact ferry agent event stream hook "
    "def return import class self None True False for in if else while yield async await"
).split()
# A skewed 256 -> 20 symbol table: random bytes through it give text-like data that zstd
# shrinks about 2-3x, without the degenerate long repeats that would flatter every method.
_LOW_ENTROPY = bytes(b" eeeettttaaoinshrdlu\n"[min(i // 12, 20)] for i in range(256))


# --- payloads -------------------------------------------------------------
def make_big_tree(root: Path, *, total_mb: int, seed: int, file_mb: int = 8) -> int:
    """A few large files, alternating incompressible (random) and text-like; returns bytes written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    remaining, index, total = total_mb << 20, 0, 0
    while remaining > 0:
        size = min(remaining, file_mb << 20)
        data = rng.randbytes(size)
        if index % 2:
            data = data.translate(_LOW_ENTROPY)
        sub = root / ("bin" if index % 2 == 0 else "data")
        sub.mkdir(exist_ok=True)
        (sub / f"part{index:03d}.{'bin' if index % 2 == 0 else 'txt'}").write_bytes(data)
        total += size
        remaining -= size
        index += 1
    return total


def make_small_tree(root: Path, *, files: int, total_mb: int, seed: int) -> int:
    """`files` source-like text files (sizes vary around total/files) in nested dirs; returns bytes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    mean = (total_mb << 20) // max(files, 1)
    total = 0
    for i in range(files):
        directory = root / f"pkg{i % 50:02d}" / f"mod{i % 9}"
        directory.mkdir(parents=True, exist_ok=True)
        size = max(64, int(rng.uniform(0.25, 1.75) * mean))
        words = rng.choices(WORDS, k=size // 5 + 1)
        data = " ".join(words).encode()[:size]
        (directory / f"file{i}.py").write_bytes(data)
        total += len(data)
    return total


def tree_stats(root: Path, *, ignore: Sequence[str] = ()) -> tuple[int, int]:
    """(regular files, bytes) under root, skipping top-level names in `ignore`."""
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in ignore]
            filenames = [f for f in filenames if f not in ignore]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += st.st_size
    return files, size


# --- hosts ----------------------------------------------------------------
@contextmanager
def sshd_hosts(count: int, workdir: Path, *, tmpfs: bool = False) -> Iterator[list[SshdHost]]:
    """Start `count` real sshd hosts; every one is stopped on exit, Ctrl-C included.

    With `tmpfs`, the hosts' directories (and so their /srv) live on a tmpfs mounted for the run:
    on this machine's ext4 (mounted with online `discard`), creating and deleting tens of
    thousands of small files made extraction times swing ten-fold from one run to the next.
    """
    reason = harness_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot start sshd hosts: {reason}")
    workdir.mkdir(parents=True, exist_ok=True)
    if tmpfs:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "ferry-bench", str(workdir)], check=True)
    hosts: list[SshdHost] = []
    try:
        for i in range(count):
            hosts.append(SshdHost(workdir / f"host{i}").start())
        yield hosts
    finally:
        for host in hosts:
            try:
                host.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {host!r}: {exc}", file=sys.stderr)
        if tmpfs:
            subprocess.run(["umount", "--lazy", str(workdir)], check=False, timeout=60)


@dataclass
class SshClientFiles:
    """A known_hosts file written from the pinned host keys and one private key file per host."""

    directory: Path
    hosts: list[SshdHost]
    known_hosts: Path = field(init=False)
    keys: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.known_hosts = self.directory / "known_hosts"
        self.known_hosts.write_text(
            "".join(f"[{h.address}]:{h.port} {h.host_key_line}\n" for h in self.hosts)
        )
        self.keys = []
        for i, host in enumerate(self.hosts):
            key = self.directory / f"id_host{i}"
            key.write_text(host.client_key_pem)
            key.chmod(0o600)
            self.keys.append(key)

    def options(self, i: int, *, cipher: str | None = None) -> list[str]:
        """OpenSSH client options for host i (no port flag: ssh wants -p, scp -P)."""
        opts = [
            "-F", "/dev/null",
            "-i", str(self.keys[i]),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10",
        ]  # fmt: skip
        if cipher:
            opts += ["-c", cipher]
        return opts

    def ssh(self, i: int, *, cipher: str | None = None) -> list[str]:
        host = self.hosts[i]
        return ["ssh", *self.options(i, cipher=cipher), "-p", str(host.port), f"root@{host.address}"]


# --- running and timing ---------------------------------------------------
def run_parallel(commands: Sequence[Sequence[str]], *, timeout: float) -> None:
    """Start every command at once, wait for all; a failure or a timeout raises with its stderr."""
    procs = [
        subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    deadline = time.monotonic() + timeout
    failures = []
    try:
        for command, proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                failures.append(f"timed out after {timeout:g}s: {' '.join(command)}")
                continue
            if proc.returncode != 0:
                tail = (err or out).decode(errors="replace")[-2000:]
                failures.append(f"exit {proc.returncode}: {' '.join(command)}\n{tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    if failures:
        raise RuntimeError("\n".join(failures))


def settle() -> None:
    """Flush dirty pages between runs so one run's writeback does not land in the next one's time."""
    os.sync()


@dataclass
class Timings:
    """Seconds of every run, per (method, payload); the best counts, the spread is shown."""

    runs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, method: str, payload: str, seconds: float) -> None:
        self.runs.setdefault((method, payload), []).append(seconds)

    def best(self, method: str, payload: str) -> float | None:
        values = self.runs.get((method, payload))
        return min(values) if values else None

    def spread(self, method: str, payload: str) -> str:
        values = self.runs.get((method, payload), [])
        if len(values) < 2:
            return ""
        return f"{min(values):.2f}-{max(values):.2f}"


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def make_app_tree(root: Path, *, total_mb: int, seed: int) -> int:
    """An application tree of about `total_mb`, half random and half text-like bytes; returns bytes.

    Seven eighths are a few large files (alternately random and text-like, as make_big_tree), the
    rest ~60 source-like files per MB, so that "one file changed" can mean one small source file.
    """
    small_mb = max(1, total_mb // 8)
    big_mb = total_mb - small_mb
    file_mb = max(1, min(8, big_mb // 4))
    total = make_big_tree(root / "assets", total_mb=big_mb, seed=seed, file_mb=file_mb) if big_mb else 0
    return total + make_small_tree(root / "src", files=60 * small_mb, total_mb=small_mb, seed=seed)


def run_per_host(
    scripts: Sequence[Sequence[Sequence[str]]], *, parallel: int, timeout: float
) -> list[list[str]]:
    """Run each host's commands in order, `parallel` hosts at a time (xargs -P style); returns stdouts.

    A failure or a timeout (per command, `timeout` seconds) raises with the command's stderr.
    """

    def one(commands: Sequence[Sequence[str]]) -> list[str]:
        outputs = []
        for command in commands:
            try:
                done = subprocess.run(
                    command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"timed out after {timeout:g}s: {' '.join(command)}") from exc
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).decode(errors="replace")[-2000:]
                raise RuntimeError(f"exit {done.returncode}: {' '.join(command)}\n{tail}")
            outputs.append(done.stdout.decode(errors="replace"))
        return outputs

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="host") as pool:
        return list(pool.map(one, scripts))
