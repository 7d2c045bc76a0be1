"""Issue 9 acceptance: a repository's symlinks and setuid files cannot reach outside the release.

Real OpenSSH hosts (tests/harness/sshd.py), each with a private /srv: /srv/outside stands for
/etc, a directory no release may touch. Artifacts come from ferry's own packaging, or are
crafted tars standing for an artifact from an older builder or a tampered store.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.agent import remote
from services.agent.layout import REFUSED_EXIT
from services.agent.ssh import HostSession
from services.builder.package import make_archive
from tests.harness.sshd import SshdHost
from tests.integration.remote_harness import prepared_session

pytestmark = pytest.mark.sshd

DP = "/srv/app"
OUTSIDE = "/srv/outside"  # on the host; stands for /etc


@dataclass
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


@dataclass
class Artifact:
    data: bytes
    fmt: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def open_stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def crafted(*members: Member) -> Artifact:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.linkname = m.kind, m.mode, m.link
            info.uid = info.gid = 4242
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(m.data) if m.kind == tarfile.REGTYPE else None)
    return Artifact(gzip.compress(buf.getvalue(), mtime=0), "gz")


def packaged(tree: Path, out: Path) -> Artifact:
    archive = make_archive(tree, out, excludes=[], fmt="zst")
    return Artifact(archive.path.read_bytes(), "zst")


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry under root with its mode, mtime and content (or link target)."""
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body: bytes | str = b""
        if stat.S_ISLNK(st.st_mode):
            body = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return out


def special_bits(root: Path) -> list[str]:
    return [
        f"{p} {oct(p.lstat().st_mode)}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
    ]


# --- fixtures ------------------------------------------------------------------
@pytest.fixture
def host(sshd_hosts: Callable[..., list[SshdHost]]) -> SshdHost:
    host = sshd_hosts(1)[0]
    outside = host.srv_path / "outside"
    (outside / "nginx").mkdir(parents=True)
    (outside / "nginx" / "nginx.conf").write_text("user www-data;\n")
    (outside / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return host


@pytest.fixture
def session(host: SshdHost) -> Iterator[HostSession]:
    with prepared_session(host, DP) as s:
        yield s


def upload(session: HostSession, release_id: str, artifact: Artifact) -> remote.StepResult:
    return remote.upload_artifact(
        session, DP, release_id, artifact.digest, artifact.fmt, artifact.open_stream, use_delta=False
    )


# --- link_shared -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("link", "shared_dirs", "shared_files"),
    [
        (OUTSIDE, ["config/nginx"], []),  # the report: rm -rf /etc/nginx, then a link
        (OUTSIDE, ["config/nginx/sites"], []),  # would mkdir /etc/nginx/sites
        (OUTSIDE, [], ["config/passwd"]),  # would replace /etc/passwd with a link
        ("../../../outside", ["config/nginx"], []),  # relative, climbing out of the release
        ("real", ["config/nginx"], []),  # even a link that stays inside: ferry writes through none
    ],
)
def test_shared_paths_through_a_release_symlink_are_refused(
    host: SshdHost,
    session: HostSession,
    link: str,
    shared_dirs: list[str],
    shared_files: list[str],
) -> None:
    artifact = crafted(
        Member("real/", tarfile.DIRTYPE, mode=0o755),
        Member("config", tarfile.SYMTYPE, link=link),
        Member("VERSION", data=b"1\n"),
    )
    assert upload(session, "r1", artifact).ok
    outside = host.srv_path / "outside"
    before = snapshot(outside)
    shared_before = snapshot(host.srv_path / "app" / "shared")

    result = remote.link_shared(session, DP, "r1", shared_files, shared_dirs)

    assert result.exit_code == REFUSED_EXIT, result.output
    path = (shared_dirs + shared_files)[0]
    assert f"refusing to link releases/r1/{path}" in result.output
    assert "config in the release is a symlink" in result.output and link in result.output
    assert snapshot(outside) == before  # nothing outside changed, not even a timestamp
    assert snapshot(host.srv_path / "app" / "shared") == shared_before  # refused before any write
    assert os.readlink(host.srv_path / "app/releases/r1/config") == link


def test_a_file_where_a_directory_should_be_is_refused(host: SshdHost, session: HostSession) -> None:
    assert upload(session, "r1", crafted(Member("config", data=b"not a dir\n"))).ok
    result = remote.link_shared(session, DP, "r1", [], ["config/nginx"])
    assert result.exit_code == REFUSED_EXIT
    assert "config in the release is not a directory" in result.output
    assert (host.srv_path / "app/releases/r1/config").read_text() == "not a dir\n"


def test_a_release_dir_that_is_itself_a_symlink_is_refused(host: SshdHost, session: HostSession) -> None:
    (host.srv_path / "app/releases/r9").symlink_to(OUTSIDE)
    before = snapshot(host.srv_path / "outside")
    result = remote.link_shared(session, DP, "r9", [], ["nginx"])
    assert result.exit_code == REFUSED_EXIT, result.output
    assert "releases/r9" in result.output and "not a directory of its own" in result.output
    assert snapshot(host.srv_path / "outside") == before


def test_ordinary_nested_shared_paths_still_link(host: SshdHost, session: HostSession) -> None:
    artifact = crafted(Member("app/", tarfile.DIRTYPE, mode=0o755), Member("app/main.py", data=b"x\n"))
    assert upload(session, "r1", artifact).ok
    result = remote.link_shared(session, DP, "r1", ["app/conf/app.env"], ["var/log"])
    assert result.ok, result.output
    rel = host.srv_path / "app/releases/r1"
    assert os.readlink(rel / "app/conf/app.env") == f"{DP}/shared/app/conf/app.env"
    assert os.readlink(rel / "var/log") == f"{DP}/shared/var/log"
    assert (rel / "app/conf").is_dir() and not (rel / "app/conf").is_symlink()


# --- extraction ------------------------------------------------------------------
def test_a_setuid_file_from_the_repository_has_no_setuid_bit_on_the_host(
    host: SshdHost, session: HostSession, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "rootshell").write_bytes(b"#!/bin/sh\nexec /bin/sh\n")
    (tree / "bin" / "rootshell").chmod(0o4755)
    (tree / "bin" / "sgid").write_bytes(b"x\n")
    (tree / "bin" / "sgid").chmod(0o2755)
    (tree / "spool").mkdir()
    (tree / "spool").chmod(0o1777)
    assert upload(session, "r1", packaged(tree, tmp_path / "out")).ok
    rel = host.srv_path / "app/releases/r1"
    assert special_bits(rel) == []
    assert stat.S_IMODE((rel / "bin/rootshell").stat().st_mode) == 0o755  # still executable
    assert (rel / "bin/rootshell").stat().st_uid == 0


def test_extraction_drops_special_bits_and_foreign_owners_of_any_artifact(
    host: SshdHost, session: HostSession
) -> None:
    # An artifact packaged elsewhere (an older builder): the host drops the bits itself.
    artifact = crafted(
        Member("bin/", tarfile.DIRTYPE, mode=0o2775),
        Member("bin/rootshell", data=b"#!/bin/sh\n", mode=0o4755),
        Member("bin/group-writable", data=b"x\n", mode=0o664),
        Member("tmp/", tarfile.DIRTYPE, mode=0o1777),
    )
    assert upload(session, "r1", artifact).ok
    rel = host.srv_path / "app/releases/r1"
    assert special_bits(rel) == []
    names = ["bin", "bin/rootshell", "bin/group-writable"]
    modes = {p: stat.S_IMODE((rel / p).lstat().st_mode) for p in names}
    assert modes == {"bin": 0o775, "bin/rootshell": 0o755, "bin/group-writable": 0o664}  # modes kept
    assert {(rel / p).stat().st_uid for p in ["bin", "bin/rootshell", "tmp"]} == {0}


@pytest.mark.parametrize(
    "members",
    [
        [Member("../../outside/escaped", data=b"x\n")],
        [Member("config", tarfile.SYMTYPE, link=OUTSIDE), Member("config/pwned", data=b"x\n")],
        [Member("config", tarfile.SYMTYPE, link="../../../outside"), Member("config/pwned", data=b"x\n")],
        [Member("hard", tarfile.LNKTYPE, link=f"{OUTSIDE}/passwd")],
        [Member(".ferry-artifact", tarfile.SYMTYPE, link=f"{OUTSIDE}/passwd")],
    ],
    ids=["dotdot", "absolute-symlink-then-member", "relative-symlink-then-member", "hard-link", "marker"],
)
def test_members_that_escape_the_release_are_refused(
    host: SshdHost, session: HostSession, members: list[Member]
) -> None:
    before = snapshot(host.srv_path / "outside")
    result = upload(session, "r1", crafted(Member("VERSION", data=b"1\n"), *members))
    assert snapshot(host.srv_path / "outside") == before
    if members[0].name == ".ferry-artifact":
        # The archive's own entry is replaced, never written through.
        assert result.ok, result.output
        assert not (host.srv_path / "app/releases/r1/.ferry-artifact").is_symlink()
    else:
        assert not result.ok
        assert not (host.srv_path / "app/releases/r1").exists()
