"""make_archive on real trees, checked by extracting with GNU tar."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ferry.domain.errors import InvalidPath
from services.builder.package import SUFFIXES, Archive, make_archive

FORMATS = ["zst", "gz", "none"]
TAR_FLAGS = {"zst": ["--zstd"], "gz": ["-z"], "none": []}


def build_tree(root: Path) -> Path:
    files = {
        "README.md": b"# app\n",
        "src/app.py": b"print('hi')\n",
        "src/pkg/__init__.py": b"",
        "src/pkg/mod.py": b"x = 1\n" * 1000,
        "static/app.js": os.urandom(50_000),
        "logs/build.log": b"noise\n",
        "src/debug.log": b"more noise\n",
        "node_modules/left-pad/index.js": b"module.exports = 1\n",
        "web/node_modules/x/y.js": b"nested\n",
        "build/": None,  # empty directory
        ".git/HEAD": b"ref: refs/heads/main\n",
        "src/sub/.git": b"gitdir: ../../.git/modules/sub\n",
        "unicode/naïve-ñ.txt": "ünïcödé\n".encode(),
        "long/" + "d" * 120 + "/" + "f" * 120 + ".txt": b"long name\n",
    }
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "current-readme").symlink_to("README.md")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "tree")


def extract(archive: Archive, into: Path) -> Path:
    into.mkdir()
    subprocess.run(
        ["tar", "-x", *TAR_FLAGS[archive.fmt], "-f", str(archive.path), "-C", str(into)], check=True
    )
    return into


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry under root: kind, content (or link target) and permission bits."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                out[rel] = ("dir", b"", st.st_mode & 0o777)
            else:
                out[rel] = ("file", path.read_bytes(), st.st_mode & 0o777)
    return out


def without(
    snap: dict[str, tuple[str, bytes | str, int]], *prefixes: str
) -> dict[str, tuple[str, bytes | str, int]]:
    return {k: v for k, v in snap.items() if not any(k == p or k.startswith(p + "/") for p in prefixes)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_the_tree_back_without_git(tree: Path, tmp_path: Path, fmt: str) -> None:
    archive = make_archive(tree, tmp_path / "out", excludes=[], fmt=fmt)  # type: ignore[arg-type]
    assert archive.path.name == archive.digest + SUFFIXES[fmt]
    assert archive.fmt == fmt
    got = snapshot(extract(archive, tmp_path / "x"))
    assert got == without(snapshot(tree), ".git", "src/sub/.git")
    assert got["run.sh"][2] == 0o755
    assert got["current-readme"] == ("link", "README.md", 0)
    assert archive.files == sum(1 for kind, _, _ in got.values() if kind != "dir")


@pytest.mark.parametrize("fmt", FORMATS)
def test_digest_and_size_describe_the_file(tree: Path, tmp_path: Path, fmt: str) -> None:
    archive = make_archive(tree, tmp_path / "out", excludes=["*.log"], fmt=fmt)  # type: ignore[arg-type]
    data = archive.path.read_bytes()
    assert archive.digest == hashlib.sha256(data).hexdigest()
    assert archive.size == len(data)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [archive.path.name]  # no temp file left


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_tree_twice_same_digest(tree: Path, tmp_path: Path, fmt: str) -> None:
    first = make_archive(tree, tmp_path / "a", excludes=["logs/"], fmt=fmt)  # type: ignore[arg-type]
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(tree), str(copy)], check=True)  # other inodes, same mtimes
    second = make_archive(copy, tmp_path / "b", excludes=["logs/"], fmt=fmt)  # type: ignore[arg-type]
    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()


def test_entries_are_sorted_and_owned_by_root(tree: Path, tmp_path: Path) -> None:
    archive = make_archive(tree, tmp_path / "out", excludes=[], fmt="none")
    with tarfile.open(archive.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["README.md", "build", "current-readme"]
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
    readme = next(m for m in members if m.name == "README.md")
    assert readme.mtime == int((tree / "README.md").stat().st_mtime)
    # depth first, siblings in byte order
    assert names.index("src/app.py") < names.index("src/pkg") < names.index("src/pkg/mod.py")


def test_excludes_files_by_glob_and_directory_trees(tree: Path, tmp_path: Path) -> None:
    archive = make_archive(
        tree, tmp_path / "out", excludes=["*.log", "node_modules/", "static", "*/node_modules/"], fmt="zst"
    )
    got = snapshot(extract(archive, tmp_path / "x"))
    assert "src/debug.log" not in got and "logs/build.log" not in got
    assert "logs" in got  # the directory stays, its matching file does not
    assert not any(k.startswith("node_modules") for k in got)
    assert not any(k.startswith("web/node_modules") for k in got) and "web" in got
    assert "static" not in got
    assert "src/app.py" in got and "build" in got


def test_a_directory_pattern_does_not_match_files(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "dist").mkdir(parents=True)
    (tree / "dist" / "a").write_text("a")
    (tree / "cache").write_text("a file called cache")
    archive = make_archive(tree, tmp_path / "out", excludes=["cache/", "dist/"], fmt="gz")
    assert set(snapshot(extract(archive, tmp_path / "x"))) == {"cache"}


def test_unsafe_excludes_are_refused(tree: Path, tmp_path: Path) -> None:
    for pattern in ("/etc", "../x", "a/../../x"):
        with pytest.raises(InvalidPath):
            make_archive(tree, tmp_path / "out", excludes=[pattern], fmt="zst")


def test_archive_directory_inside_the_tree_is_refused(tree: Path) -> None:
    with pytest.raises(InvalidPath):
        make_archive(tree, tree / "dist", excludes=[], fmt="zst")


def test_empty_tree_makes_a_valid_archive(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    archive = make_archive(tmp_path / "empty", tmp_path / "out", excludes=[], fmt="zst")
    assert archive.files == 0
    assert snapshot(extract(archive, tmp_path / "x")) == {}


def test_setuid_setgid_and_sticky_bits_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "su-like").write_bytes(b"#!/bin/sh\nid\n")
    (root / "bin" / "su-like").chmod(0o4755)
    (root / "bin" / "sg-like").write_bytes(b"x")
    (root / "bin" / "sg-like").chmod(0o2750)
    (root / "shared-tmp").mkdir()
    (root / "shared-tmp").chmod(0o1777)
    (root / "group-dir").mkdir()
    (root / "group-dir").chmod(0o2775)
    archive = make_archive(root, tmp_path / "out", excludes=[], fmt="gz")
    with tarfile.open(archive.path) as tar:
        modes = {m.name.rstrip("/"): m.mode for m in tar.getmembers()}
    assert modes["bin/su-like"] == 0o755  # still executable
    assert modes["bin/sg-like"] == 0o750
    assert modes["shared-tmp"] == 0o777
    assert modes["group-dir"] == 0o775
    assert all(mode & 0o7000 == 0 for mode in modes.values())


def test_fifos_sockets_and_device_files_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "app.txt").write_text("app\n")
    os.mkfifo(root / "a-fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "a-socket"))
        devices = ["a-device"]
        try:
            os.mknod(root / "a-device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            devices = []  # not root: no device node to pack
        archive = make_archive(root, tmp_path / "out", excludes=[], fmt="none")
    with tarfile.open(archive.path) as tar:
        names = tar.getnames()
    assert names == ["app.txt"]
    assert archive.files == 1
    assert all(d not in names for d in devices)
