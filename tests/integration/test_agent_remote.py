"""services.agent.remote and services.agent.health against real OpenSSH hosts with private /srv."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shlex
import socket
import tarfile
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from ferry.domain.errors import InvalidInput, InvalidPath
from services.agent import remote
from services.agent.health import health_check
from services.agent.ssh import HostSession, SSHTarget
from tests.harness.sampleapp import health_url, make_sample_repo, restart_command
from tests.harness.sshd import SshdHost

pytestmark = pytest.mark.sshd

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


@pytest.fixture
def session(host):
    target = SSHTarget(
        name="web-1",
        address=host.address,
        port=host.port,
        private_key=host.client_key_pem,
        host_key=host.host_key_line,
    )
    with HostSession.connect(target) as s:
        assert remote.prepare(s, DP).ok
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


# --- upload --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zst", "gz", "none"])
def test_upload_extracts_identical_files_and_reuses_the_hosts_copy(host, session, big_files, fmt):
    artifact = Artifact(big_files, fmt)

    first = release(session, "r1", artifact)
    assert first.detail["transferred"] == len(artifact.data)
    assert first.detail["reused"] is False
    assert_tree(srv(host) / "releases/r1", big_files)
    assert not list((srv(host) / "releases").glob(".tmp-*"))
    # The artifact's manifest, read on the agent while the bytes travelled, is kept for deltas.
    assert (srv(host) / ".ferry/manifests/r1.gz").is_file()
    opened = artifact.opened  # once for the transfer, once for the manifest

    second = release(session, "r2", artifact)
    assert second.detail == {**second.detail, "transferred": 0, "reused": True, "delta": False}
    assert artifact.opened == opened  # nothing fetched for a host that already holds the digest
    assert_tree(srv(host) / "releases/r2", big_files)

    again = release(session, "r1", artifact)  # re-running a finished step is a no-op
    assert again.detail["already_extracted"] is True and again.detail["transferred"] == 0
    assert artifact.opened == opened
    assert remote.host_has_artifact(session, DP, artifact.digest)
    assert not remote.host_has_artifact(session, DP, "0" * 64)


def test_zst_to_a_host_without_zstd_is_decompressed_on_the_agent(host, session, big_files):
    # Hide zstd inside this host's own mount namespace only.
    assert session.run("mount --bind /dev/null /usr/bin/zstd && ! command -v zstd", timeout=10).ok
    artifact = Artifact(big_files, "zst")
    result = release(session, "r1", artifact)
    assert result.detail["decompressed_on_agent"] is True
    assert result.detail["stored_as"] == f"{artifact.digest}.tar"
    assert_tree(srv(host) / "releases/r1", big_files)
    assert release(session, "r2", artifact).detail["transferred"] == 0


def test_upload_recovers_from_a_crashed_attempt(host, session):
    artifact = small("1")
    releases = srv(host) / "releases"
    (releases / ".tmp-r1/half").mkdir(parents=True)
    (srv(host) / f".ferry/artifacts/.partial-{artifact.digest}-dead").write_bytes(b"trunc")
    (releases / "r1").mkdir()  # a dir with no marker: never completed
    release(session, "r1", artifact)
    assert (releases / "r1/VERSION").read_text() == "1\n"
    assert not (releases / ".tmp-r1").exists()
    assert not list((srv(host) / ".ferry/artifacts").glob(".partial-*"))


def test_upload_with_a_wrong_digest_keeps_nothing(host, session):
    artifact = small("1")
    wrong = "f" * 64
    result = remote.upload_artifact(session, DP, "r1", wrong, "none", artifact.open_stream)
    assert result.exit_code != 0
    assert "digest mismatch" in result.output
    assert not (srv(host) / "releases/r1").exists()
    assert os.listdir(srv(host) / ".ferry/artifacts") == []


def test_upload_refuses_to_replace_a_release_holding_another_artifact(session):
    release(session, "r1", small("1"))
    other = small("2")
    result = remote.upload_artifact(session, DP, "r1", other.digest, "none", other.open_stream)
    assert result.exit_code != 0 and "another artifact" in result.output
    assert other.opened == 0


def test_paths_and_ids_are_validated(session):
    art = small("1")
    for bad in ["relative/path", "/srv/../etc", "/srv/a\nb", "/"]:
        with pytest.raises(InvalidPath):
            remote.prepare(session, bad)
    for bad_id in ["../x", "a b", "", "a;rm", "x/y"]:
        with pytest.raises(InvalidPath):
            remote.upload_artifact(session, DP, bad_id, art.digest, "none", art.open_stream)
        with pytest.raises(InvalidPath):
            remote.activate(session, DP, bad_id)
    with pytest.raises(InvalidInput):
        remote.upload_artifact(session, DP, "r1", "nothex", "none", art.open_stream)
    with pytest.raises(InvalidInput):
        remote.upload_artifact(session, DP, "r1", art.digest, "rar", art.open_stream)
    for bad_shared in ["../etc/passwd", "/etc/passwd", "a/../../b", "a/./b", ""]:
        with pytest.raises(InvalidPath):
            remote.link_shared(session, DP, "r1", [bad_shared], [])
    assert art.opened == 0


# --- shared, hooks ---------------------------------------------------------------
def test_link_shared_files_and_dirs(host, session):
    artifact = Artifact(
        {"VERSION": b"1\n", "config/app.env": b"FROM_ARTIFACT=1\n", "log/old.log": b"x"}, "none"
    )
    release(session, "r1", artifact)
    (srv(host) / "shared/config").mkdir(parents=True)
    (srv(host) / "shared/config/app.env").write_text("SECRET=kept\n")

    result = remote.link_shared(
        session, DP, "r1", ["config/app.env", "data/state.json"], ["log", "tmp/cache"]
    )
    assert result.ok, result.output
    rel = srv(host) / "releases/r1"
    for p in ["config/app.env", "data/state.json", "log", "tmp/cache"]:
        assert os.readlink(rel / p) == f"{DP}/shared/{p}"
    assert (srv(host) / "shared/config/app.env").read_text() == "SECRET=kept\n"
    assert (srv(host) / "shared/data/state.json").is_file()
    assert (srv(host) / "shared/tmp/cache").is_dir()
    assert (srv(host) / "shared/log").is_dir()
    # Seen from inside the host, through the links.
    assert session.run(f"cat {DP}/releases/r1/config/app.env", timeout=10).output == "SECRET=kept\n"
    assert remote.link_shared(session, DP, "r1", ["config/app.env"], ["log"]).ok  # idempotent


def test_run_hook_gets_the_ferry_environment(host, session):
    release(session, "r1", small("1"))
    result = remote.run_hook(
        session,
        DP,
        "r1",
        'echo "$FERRY_RELEASE_ID $FERRY_DEPLOY_PATH $FERRY_RELEASE_PATH $FERRY_HOST_ADDRESS '
        '$FERRY_HOST_NAME $EXTRA" > hook.out; pwd',
        env={"EXTRA": "extra value", "FERRY_RELEASE_ID": "spoofed"},
        timeout=10,
    )
    assert result.ok, result.output
    assert result.output.strip() == f"{DP}/releases/r1"
    assert (srv(host) / "releases/r1/hook.out").read_text().split() == [
        "r1",
        DP,
        f"{DP}/releases/r1",
        host.address,
        "web-1",
        "extra",
        "value",
    ]
    assert remote.run_hook(session, DP, "r1", None).detail == {"skipped": True}
    assert remote.run_hook(session, DP, "r1", "  ").detail == {"skipped": True}
    failing = remote.run_hook(session, DP, "r1", "echo bad; exit 9", timeout=10)
    assert failing.exit_code == 9 and "bad" in failing.output


# --- activate, rollback, prune -------------------------------------------------------
def test_activate_reports_previous_and_is_idempotent(host, session):
    release(session, "r1", small("1"))
    release(session, "r2", small("2"))
    assert remote.current_release(session, DP) is None

    first = remote.activate(session, DP, "r1")
    assert first.ok and first.detail["previous"] is None
    second = remote.activate(session, DP, "r2")
    assert second.detail == {"release": "r2", "previous": "r1", "already_current": False}
    assert os.readlink(srv(host) / "current") == "releases/r2"
    assert remote.current_release(session, DP) == "r2"

    repeat = remote.activate(session, DP, "r2")  # a redelivered activation changes nothing
    assert repeat.ok and repeat.detail == {"release": "r2", "previous": "r1", "already_current": True}
    assert not list(srv(host).glob("current.tmp-*"))

    missing = remote.activate(session, DP, "r9")
    assert missing.exit_code != 0 and "no such release" in missing.output
    assert remote.current_release(session, DP) == "r2"


def test_switching_is_atomic_for_readers_on_the_host(host, session):
    release(session, "r1", small("1"))
    release(session, "r2", small("2"))
    remote.activate(session, DP, "r1")
    reader = (
        "n=0; fail=0; while [ ! -e /srv/stop ] && [ $n -lt 2000000 ]; do "
        f"if ! read v < {DP}/current/VERSION 2>/dev/null; then fail=$((fail+1)); fi; n=$((n+1)); done; "
        "echo $n $fail > /srv/reader.out"
    )
    started = session.run(
        f"setsid nohup sh -c {shlex.quote(reader)} >/dev/null 2>&1 </dev/null &", timeout=10
    )
    assert started.ok
    for i in range(10):
        assert remote.activate(session, DP, "r2" if i % 2 == 0 else "r1").ok
    (host.srv_path / "stop").touch()
    out = host.srv_path / "reader.out"
    assert wait_until(lambda: out.exists() and out.read_text().endswith("\n"))
    reads, failures = map(int, out.read_text().split())
    assert reads > 100 and failures == 0


def test_rollback_switches_back(host, session):
    for n in ("1", "2"):
        release(session, f"r{n}", small(n))
        remote.activate(session, DP, f"r{n}")
    result = remote.rollback(session, DP, "r1")
    assert result.ok and result.detail["previous"] == "r2"
    assert (srv(host) / "current/VERSION").read_text() == "1\n"
    assert remote.rollback(session, DP, "r1").detail["already_current"] is True


def test_prune_keeps_the_newest_the_live_and_the_protected(host, session):
    ids = [f"r{i}" for i in range(1, 7)]
    for rid in ids:
        release(session, rid, small(rid), use_delta=False)  # every release with its archive
        (srv(host) / f".ferry/manifests/{rid}.gz").write_bytes(b"")  # and a manifest (deltas)
    remote.activate(session, DP, "r2")  # live, but old

    result = remote.prune(session, DP, keep=2, protect={"r1"})
    assert result.ok, result.output
    assert sorted(result.detail["removed"]) == ["r3", "r4"]
    assert sorted(os.listdir(srv(host) / "releases")) == ["r1", "r2", "r5", "r6"]
    # Cached archives of removed releases go too; those still extracted stay.
    cached = {name.split(".")[0] for name in os.listdir(srv(host) / ".ferry/artifacts")}
    assert cached == {small(r).digest for r in ["r1", "r2", "r5", "r6"]}
    assert sorted(os.listdir(srv(host) / ".ferry/manifests")) == ["r1.gz", "r2.gz", "r5.gz", "r6.gz"]

    again = remote.prune(session, DP, keep=1, protect=set())
    assert sorted(os.listdir(srv(host) / "releases")) == ["r2", "r6"]
    assert again.detail["live"] == "r2"
    with pytest.raises(InvalidInput):
        remote.prune(session, DP, keep=0, protect=set())


# --- restart and health, with the sample app ------------------------------------------
def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def test_release_the_sample_app_check_health_and_roll_back(host, session, tmp_path):
    repo = make_sample_repo(tmp_path / "repo")
    v1, v2 = repo.commit("1.0.0"), repo.commit("2.0.0", fail_health=True)
    artifacts = {rid: Artifact({}, "none", data=repo.archive(sha)) for rid, sha in (("r1", v1), ("r2", v2))}
    good = artifacts["r1"]
    port = free_port(host.address)
    page = f"http://{host.address}:{port}/"

    release(session, "r1", good)
    assert remote.link_shared(session, DP, "r1", [], ["log"]).ok
    assert remote.activate(session, DP, "r1").ok
    restarted = remote.restart(session, DP, restart_command(port), timeout=20)
    assert restarted.ok, restarted.output
    healthy = health_check(session, DP, url=health_url(port), timeout=2, retries=50, delay=0.1)
    assert healthy.ok, healthy.output + (srv(host) / "shared/sampleapp.log").read_text()
    assert healthy.detail["attempts"][-1]["passed"] is True
    assert httpx.get(page, trust_env=False).text == "1.0.0\n"
    pid_v1 = int((srv(host) / "shared/sampleapp.pid").read_text())

    release(session, "r2", artifacts["r2"])
    assert remote.activate(session, DP, "r2").detail["previous"] == "r1"
    assert remote.restart(session, DP, restart_command(port), timeout=20).ok
    sick = health_check(session, DP, url=health_url(port), timeout=2, retries=3, delay=0.1)
    assert sick.exit_code != 0
    assert "HTTP 500" in sick.output and "failed after" in sick.output
    assert all(not a["passed"] for a in sick.detail["attempts"])
    # The restart stopped the previous instance (a zombie has no namespace links left).
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid_v1}/ns/mnt"))

    back = remote.rollback(session, DP, "r1")
    assert back.detail["previous"] == "r2"
    assert remote.restart(session, DP, restart_command(port), timeout=20).ok
    assert health_check(session, DP, url=health_url(port), timeout=2, retries=50, delay=0.1).ok
    assert httpx.get(page, trust_env=False).text == "1.0.0\n"

    by_command = health_check(session, DP, command='grep -q 1.0.0 VERSION && test -n "$FERRY_RELEASE_ID"')
    assert by_command.ok, by_command.output
    failing = health_check(session, DP, command="echo not yet; exit 7", retries=2, delay=0.05, timeout=5)
    assert failing.exit_code == 1
    assert "attempt 3/3" in failing.output and "exit 7: not yet" in failing.output

    app_pid = int((srv(host) / "shared/sampleapp.pid").read_text())
    assert app_pid in host.leftover_pids()
    host.stop()
    assert host.leftover_pids() == []
    assert wait_until(lambda: not os.path.exists(f"/proc/{app_pid}/ns/mnt"))


def test_health_check_against_nothing_listening_exhausts_retries(host, session):
    port = free_port(host.address)
    started = time.monotonic()
    result = health_check(session, DP, url=health_url(port), timeout=1, retries=3, delay=0.05)
    assert result.exit_code == 1
    assert len(result.detail["attempts"]) == 4
    assert "ConnectError" in result.output
    assert time.monotonic() - started < 5
    with pytest.raises(InvalidInput):
        health_check(session, DP, url="ftp://{address}/", retries=0)
    with pytest.raises(InvalidInput):
        health_check(session, DP)


def test_restart_without_a_live_release_fails_clearly(session):
    result = remote.restart(session, DP, "true", timeout=10)
    assert result.exit_code != 0 and "nothing to restart" in result.output
