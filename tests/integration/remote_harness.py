"""Harness of the services.agent.remote tests: artifacts built in memory, one real sshd host.

The `big_files`, `host` and `session` fixtures are imported by name by the test modules.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import random
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from services.agent import remote
from services.agent.ssh import HostSession, SSHTarget
from tests.harness.sshd import SshdHost

DP = "/srv/app"


# --- artifacts -----------------------------------------------------------------
def build_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mode = 0o644
            info.uid = info.gid = 4242  # extraction must not keep foreign owners
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def compress(tar: bytes, fmt: str) -> bytes:
    if fmt == "zst":
        return zstandard.ZstdCompressor(level=1).compress(tar)
    if fmt == "gz":
        return gzip.compress(tar, compresslevel=1, mtime=0)
    return tar


class Artifact:
    def __init__(self, files: dict[str, bytes], fmt: str, data: bytes | None = None) -> None:
        self.files = files
        self.fmt = fmt
        self.data = compress(build_tar(files), fmt) if data is None else data
        self.digest = hashlib.sha256(self.data).hexdigest()
        self.opened = 0

    def open_stream(self) -> io.BytesIO:
        self.opened += 1
        return io.BytesIO(self.data)


@pytest.fixture(scope="module")
def big_files() -> dict[str, bytes]:
    """~20 MB: half incompressible, half text, in a few dirs."""
    rng = random.Random(1234)
    files = {f"lib/blob{i}.bin": rng.randbytes(2_500_000) for i in range(4)}
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    files.update({f"static/page{i}.txt": line * (180_000 + i) for i in range(1, 5)})
    files["VERSION"] = b"big\n"
    files["bin/run.sh"] = b"#!/bin/sh\necho hi\n"
    return files


def small(version: str, fmt: str = "none") -> Artifact:
    return Artifact({"VERSION": f"{version}\n".encode(), "app.txt": b"x" * 100}, fmt)


def assert_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, body in files.items():
        path = root / name
        assert path.read_bytes() == body, name
        assert path.stat().st_uid == 0, name
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert on_disk == set(files) | {remote.MARKER}


# --- fixtures ------------------------------------------------------------------
@pytest.fixture
def host(sshd_hosts) -> SshdHost:
    return sshd_hosts(1)[0]


@contextlib.contextmanager
def prepared_session(host: SshdHost, deploy_path: str = DP) -> Iterator[HostSession]:
    """An agent's SSH session to ``host`` (pinned key), with the deploy path prepared."""
    target = SSHTarget(
        name="web-1",
        address=host.address,
        port=host.port,
        private_key=host.client_key_pem,
        host_key=host.host_key_line,
    )
    with HostSession.connect(target) as s:
        assert remote.prepare(s, deploy_path).ok
        yield s


@pytest.fixture
def session(host):
    with prepared_session(host) as s:
        yield s


def srv(host: SshdHost) -> Path:
    return host.srv_path / "app"


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def release(session, release_id: str, artifact: Artifact, **options) -> remote.StepResult:
    result = remote.upload_artifact(
        session, DP, release_id, artifact.digest, artifact.fmt, artifact.open_stream, **options
    )
    assert result.ok, result.output
    return result
