"""Delta uploads against real OpenSSH hosts: only changed files travel, the rest is hard-linked."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from services.agent import manifest, remote
from tests.harness.sshd import SshdHost
from tests.integration.remote_harness import prepared_session

pytestmark = pytest.mark.sshd

DP = "/srv/app"

# path -> bytes (a file, mode 0644), (bytes, mode), or ("->", target) for a symlink
Spec = dict[str, object]


class Artifact:
    def __init__(self, spec: Spec, fmt: str = "zst", mtime: int = 1_700_000_000) -> None:
        self.spec, self.fmt = spec, fmt
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(spec):
                kind, mode, body = _kind(spec[name])
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid = mtime, 4242, 4242
                if kind == "l":
                    info.type, info.linkname = tarfile.SYMTYPE, body.decode()
                    tar.addfile(info)
                else:
                    info.mode, info.size = mode, len(body)
                    tar.addfile(info, io.BytesIO(body))
        raw = buf.getvalue()
        self.data = zstandard.ZstdCompressor(level=3).compress(raw) if fmt == "zst" else raw
        self.digest = hashlib.sha256(self.data).hexdigest()

    def open_stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def _kind(value: object) -> tuple[str, int, bytes]:
    if isinstance(value, bytes):
        return "f", 0o644, value
    assert isinstance(value, tuple)
    if value[0] == "->":
        return "l", 0, value[1].encode()
    return "f", value[1], value[0]


def app(files: int = 120, seed: int = 7) -> Spec:
    """~2.4 MB of mixed files in a few dirs, a script and a symlink."""
    rng = random.Random(seed)
    spec: Spec = {f"lib/mod{i // 20}/file{i}.py": rng.randbytes(20_000) for i in range(files)}
    spec["bin/run"] = (b"#!/bin/sh\necho run\n", 0o755)
    spec["current-lib"] = ("->", "lib/mod0")
    spec["VERSION"] = b"1\n"
    return spec


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """What a release dir holds: path -> (kind, permission bits, content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", 0, b"")
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), path.read_bytes())
    out.pop(remote.MARKER, None)
    return out


def expected(spec: Spec) -> dict[str, tuple[str, int, bytes]]:
    out: dict[str, tuple[str, int, bytes]] = {}
    for name, value in spec.items():
        out[name] = _kind(value)
        parts = name.split("/")
        for i in range(1, len(parts)):
            out["/".join(parts[:i])] = ("d", 0, b"")
    return out


@pytest.fixture
def host(sshd_hosts) -> SshdHost:
    return sshd_hosts(1)[0]


@pytest.fixture
def session(host):
    manifest.CACHE = manifest.ManifestCache()  # a fresh agent: nothing remembered from other tests
    with prepared_session(host, DP) as s:
        yield s


def releases(host: SshdHost) -> Path:
    return host.srv_path / "app/releases"


def upload(session, release_id: str, artifact: Artifact, **options) -> remote.StepResult:
    result = remote.upload_artifact(
        session, DP, release_id, artifact.digest, artifact.fmt, artifact.open_stream, **options
    )
    assert result.ok, result.output
    return result


def test_a_one_file_change_sends_only_that_file_and_links_the_rest(host, session):
    old_spec = app()
    first = upload(session, "r1", Artifact(old_spec))
    assert first.detail["delta"] is False and first.detail["bytes_sent"] == len(Artifact(old_spec).data)
    assert remote.activate(session, DP, "r1").ok
    before = tree(releases(host) / "r1")

    new_spec = dict(old_spec, **{"lib/mod2/file45.py": random.Random(99).randbytes(20_000)})
    new = Artifact(new_spec, mtime=1_700_000_500)  # a fresh checkout: every mtime differs
    second = upload(session, "r2", new)

    d = second.detail
    assert d["delta"] is True and d["base_release"] == "r1"
    regular = [name for name, v in new_spec.items() if _kind(v)[0] == "f"]
    assert d["files_sent"] == 1 and d["files_linked"] == len(regular) - 1
    assert d["bytes_sent"] == d["transferred"] <= 0.05 * len(new.data)
    assert d["digest"] == new.digest and d["reused"] is False
    r1, r2 = releases(host) / "r1", releases(host) / "r2"
    assert tree(r2) == expected(new_spec)
    assert tree(r1) == before  # the base is untouched
    assert (r2 / remote.MARKER).read_text() == f"{new.digest}\n"
    # Unchanged files share one inode; the changed one is a new inode in r2 only.
    same, changed = "lib/mod0/file0.py", "lib/mod2/file45.py"
    assert (r1 / same).stat().st_ino == (r2 / same).stat().st_ino
    assert (r1 / same).stat().st_nlink == 2
    assert (r1 / changed).stat().st_ino != (r2 / changed).stat().st_ino
    assert (r1 / changed).stat().st_nlink == (r2 / changed).stat().st_nlink == 1
    assert (r2 / changed).stat().st_mtime == 1_700_000_500
    # The host keeps the new manifest and no staging; r2 can be the next base.
    ferry = host.srv_path / "app/.ferry"
    assert (ferry / "manifests/r2.gz").is_file()
    assert not list(ferry.glob("delta-*")) and not list(releases(host).glob(".tmp-*"))
    third = upload(session, "r3", Artifact(dict(new_spec, VERSION=b"3\n")), base_release="r2")
    assert third.detail["delta"] is True and third.detail["base_release"] == "r2", third.output
    assert tree(releases(host) / "r3") == expected(dict(new_spec, VERSION=b"3\n"))


def test_deleted_files_mode_changes_and_symlinks(host, session):
    old_spec: Spec = {
        "keep.txt": b"keep\n",
        "gone.txt": b"gone\n",
        "gone-dir/x.txt": b"x\n",
        "script.sh": b"#!/bin/sh\n",
        "link": ("->", "keep.txt"),
        "link-gone": ("->", "keep.txt"),
        "data/blob.bin": bytes(100_000),
    }
    upload(session, "r1", Artifact(old_spec))
    new_spec: Spec = {
        "keep.txt": b"keep\n",
        "script.sh": (b"#!/bin/sh\n", 0o755),  # same bytes, new mode: must not chmod r1's inode
        "link": ("->", "data/blob.bin"),
        "new-link": ("->", "data"),
        "new-dir/sub/y.txt": b"y\n",
        "data/blob.bin": bytes(100_000),
    }
    result = upload(session, "r2", Artifact(new_spec, mtime=1_700_000_900))
    assert result.detail["delta"] is True
    assert result.detail["files_sent"] == 2  # script.sh (mode) and new-dir/sub/y.txt
    r1, r2 = releases(host) / "r1", releases(host) / "r2"
    assert tree(r2) == expected(new_spec)
    assert tree(r1) == expected(old_spec)
    assert stat.S_IMODE((r1 / "script.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((r2 / "script.sh").stat().st_mode) == 0o755
    assert (r1 / "data/blob.bin").stat().st_ino == (r2 / "data/blob.bin").stat().st_ino


def test_a_missing_base_falls_back_to_the_whole_artifact(host, session):
    upload(session, "r1", Artifact(app()))
    session.run(f"rm -rf {DP}/releases/r1", timeout=30)
    new = Artifact(dict(app(), VERSION=b"2\n"))
    result = upload(session, "r2", new)
    assert result.detail["delta"] is False
    assert result.detail["transferred"] == len(new.data)
    assert tree(releases(host) / "r2") == expected(new.spec)


def test_a_base_changed_on_the_host_sends_those_files(host, session):
    spec = app()
    upload(session, "r1", Artifact(spec))
    r1 = releases(host) / "r1"
    (r1 / "lib/mod1/file20.py").write_bytes(b"written in place by a hook")
    (r1 / "VERSION").unlink()
    (r1 / "VERSION").symlink_to("/srv/app/shared/VERSION")  # what link_shared does
    new_spec = dict(spec, **{"lib/mod0/file1.py": b"changed"})
    result = upload(session, "r2", Artifact(new_spec))
    assert result.detail["delta"] is True
    assert result.detail["files_sent"] == 3 and result.detail["base_files_changed_on_host"] == 2
    assert tree(releases(host) / "r2") == expected(new_spec)
    assert (r1 / "lib/mod1/file20.py").read_bytes() == b"written in place by a hook"


def test_a_bad_manifest_on_the_host_falls_back(host, session):
    spec = app()
    first = Artifact(spec)
    upload(session, "r1", first)
    (host.srv_path / "app/.ferry/manifests/r1.gz").write_bytes(b"not gzip")
    new = Artifact(dict(spec, VERSION=b"2\n"))
    result = upload(session, "r2", new)
    assert result.detail["delta"] is False and "unreadable manifest" in result.detail["delta_fallback"]
    assert result.detail["transferred"] == len(new.data)
    assert tree(releases(host) / "r2") == expected(new.spec)


def test_the_same_digest_again_links_everything_and_opting_out_sends_it_whole(host, session):
    art = Artifact(app())
    upload(session, "r1", art, use_delta=False)
    assert not (host.srv_path / "app/.ferry/manifests/r1.gz").exists()
    upload(session, "r2", art)  # the archive is cached on the host: nothing travels, nothing linked
    other = Artifact(dict(app(), VERSION=b"2\n"))
    full = upload(session, "r3", other, use_delta=False)
    assert full.detail["delta"] is False and full.detail["transferred"] == len(other.data)
