"""Package a built tree into one artifact: a tar, compressed with zstd or gzip, or plain.

The archive is streamed once: tar -> compressor -> sha256 -> file, so the digest costs no
second read. Entries are in sorted order with uid/gid 0 and no user names, so the same tree
gives the same bytes (mtimes are the files' own, in whole seconds). Headers are built here
rather than through ``tarfile.TarFile.addfile``, whose per-entry cost was most of the time
for trees of small files (bench/bench_package.py); they are byte-identical to tarfile's
PAX-format headers, which the tests check.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, cast, get_args

import zstandard

from ferry.domain.errors import BuildError, InvalidInput, InvalidPath

Format = Literal["zst", "gz", "none"]
FORMATS: tuple[str, ...] = get_args(Format)
SUFFIXES: dict[str, str] = {"zst": ".tar.zst", "gz": ".tar.gz", "none": ".tar"}
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
RECIPE_VERSION = 2  # bump when packaging output changes, so old artifacts are not reused (2: no setuid)
# Permission bits an artifact may carry: setuid, setgid and sticky are dropped, since root extracts
# artifacts on every host and a setuid file from a repository would be a root shell for anyone.
_MODE_BITS = 0o777
_COPY_BUFFER = 1 << 20
_BATCH = 1 << 20
_ALWAYS_EXCLUDED = frozenset({".git"})


@dataclass(frozen=True)
class Archive:
    path: Path
    digest: str  # sha256 hex of the archive file's bytes
    size: int
    fmt: Format
    files: int  # regular files and symlinks packed (directories not counted)


def recipe_key(commit: str, build_hooks: list[str], excludes: list[str], fmt: str) -> str:
    """sha256 of a canonical JSON of everything that decides the artifact's content."""
    _check_format(fmt)
    recipe = {
        "version": RECIPE_VERSION,
        "commit": commit,
        "build_hooks": list(build_hooks),
        "excludes": sorted(set(excludes)),  # any one matching excludes: order and repeats do not matter
        "fmt": fmt,
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_excludes(excludes: list[str]) -> list[str]:
    """Return ``excludes`` if every pattern is relative and stays inside the tree; else InvalidPath."""
    for pattern in excludes:
        problem = _exclude_problem(pattern)
        if problem is not None:
            raise InvalidPath(f"invalid exclude pattern {pattern!r}: {problem}", field="excludes")
    return excludes


def _exclude_problem(pattern: str) -> str | None:
    if not isinstance(pattern, str) or not pattern.strip("/"):
        return "it is empty"
    if any(ord(c) < 0x20 or c == "\x7f" for c in pattern):
        return "it contains a control character"
    if pattern.startswith("/") or pattern.startswith("\\"):
        return "it is absolute"
    if ".." in PurePosixPath(pattern).parts:
        return "it contains '..'"
    return None


class _Matcher:
    """fnmatch patterns against paths relative to the tree; ``dir/`` matches directories only.

    A pattern that matches a directory excludes its whole tree. ``*`` also matches ``/``, so
    ``*.log`` excludes log files at any depth.
    """

    def __init__(self, patterns: list[str]) -> None:
        self.any_kind = [p.removeprefix("./") for p in patterns if not p.endswith("/")]
        self.dirs_only = [p.removeprefix("./").rstrip("/") for p in patterns if p.endswith("/")]

    def excluded(self, rel: str, is_dir: bool) -> bool:
        if any(fnmatch.fnmatchcase(rel, p) for p in self.any_kind):
            return True
        return is_dir and any(fnmatch.fnmatchcase(rel, p) for p in self.dirs_only)


class _Sink:
    """The end of the pipeline: hashes, counts and writes the archive's bytes."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


def make_archive(src: Path, dest_dir: Path, *, excludes: list[str], fmt: Format) -> Archive:
    """Pack the tree under ``src`` into ``dest_dir/<digest><suffix>``; ``.git`` is never included."""
    _check_format(fmt)
    validate_excludes(excludes)
    src = Path(src).resolve()
    dest_dir = Path(dest_dir)
    if not src.is_dir():
        raise InvalidPath(f"{src} is not a directory", field="src")
    dest_dir.mkdir(parents=True, exist_ok=True)
    if dest_dir.resolve().is_relative_to(src):
        raise InvalidPath("the archive's directory must not be inside the tree it packs", field="dest_dir")
    matcher = _Matcher(excludes)

    fd, tmp_name = tempfile.mkstemp(prefix=".archive-", suffix=SUFFIXES[fmt], dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=_COPY_BUFFER) as out:
            sink = _Sink(out)
            with _compressor(sink, fmt) as compressed:
                files = _write_tar(src, compressed, matcher)
        digest = sink.hash.hexdigest()
        final = dest_dir / f"{digest}{SUFFIXES[fmt]}"
        os.replace(tmp, final)
    except OSError as exc:
        raise BuildError(f"packaging failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return Archive(path=final, digest=digest, size=sink.size, fmt=fmt, files=files)


@contextlib.contextmanager
def _compressor(sink: _Sink, fmt: Format) -> Iterator[BinaryIO | _Sink]:
    if fmt == "none":
        yield sink
    elif fmt == "zst":
        params = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
        with params.stream_writer(cast(BinaryIO, sink), closefd=False) as writer:
            yield cast(BinaryIO, writer)
    else:
        # mtime=0 and no file name in the header: the same tar gives the same gzip bytes.
        with gzip.GzipFile(
            filename="", fileobj=cast(BinaryIO, sink), mode="wb", compresslevel=GZIP_LEVEL, mtime=0
        ) as writer:
            yield cast(BinaryIO, writer)


def _write_tar(src: Path, out: BinaryIO | _Sink, matcher: _Matcher) -> int:
    """Write the tar stream of ``src`` into ``out``; return how many files and symlinks it holds."""
    writer = _Batcher(out)
    files = 0
    for rel, path, st in _walk(src, matcher):
        mode, mtime = st.st_mode & _MODE_BITS, int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            writer.add(tar_header(rel, kind=tarfile.DIRTYPE, mode=mode, size=0, mtime=mtime))
            continue
        files += 1
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(path)
            writer.add(tar_header(rel, kind=tarfile.SYMTYPE, mode=mode, size=0, mtime=mtime, linkname=link))
            continue
        writer.add(tar_header(rel, kind=tarfile.REGTYPE, mode=mode, size=st.st_size, mtime=mtime))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            remaining = st.st_size
            while remaining:
                chunk = os.read(fd, min(remaining, _BATCH))
                if not chunk:
                    raise BuildError(f"packaging failed: {rel} shrank while it was being read")
                writer.add(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        writer.add(_NUL * (-st.st_size % tarfile.BLOCKSIZE))
    # End of archive: two zero blocks, then zeros up to a whole record, as tar(1) and tarfile do.
    writer.add(_NUL * (2 * tarfile.BLOCKSIZE))
    writer.add(_NUL * (-writer.offset % tarfile.RECORDSIZE))
    writer.flush()
    return files


class _Batcher:
    """Collects small writes into ~1 MiB batches: one compressor and hash call per batch, not per file."""

    def __init__(self, out: BinaryIO | _Sink) -> None:
        self.out = out
        self.buffer = bytearray()
        self.offset = 0

    def add(self, data: bytes) -> None:
        self.offset += len(data)
        if len(data) >= _BATCH:
            self.flush()
            self.out.write(data)
            return
        self.buffer += data
        if len(self.buffer) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.out.write(bytes(self.buffer))
            self.buffer = bytearray()


# The constant parts of a ustar header block with uid/gid 0 and empty user/group names.
_NUL = b"\0"
_IDS = b"0000000\0" * 2
_HEADER_TAIL = tarfile.POSIX_MAGIC + _NUL * (32 + 32 + 8 + 8 + 155 + 12)
_OCTAL_LIMIT = 8**11


def tar_header(name: str, *, kind: bytes, mode: int, size: int, mtime: int, linkname: str = "") -> bytes:
    """The header block(s) of one entry, byte for byte what ``tarfile`` writes in PAX format.

    Plain ASCII names that fit are built directly (the common case, ~10x faster than
    ``TarInfo.tobuf``); long or non-ASCII names and huge sizes fall back to tarfile's PAX headers.
    """
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    try:
        raw_name, raw_link = name.encode("ascii"), linkname.encode("ascii")
        fits = len(raw_name) <= 100 and len(raw_link) <= 100 and size < _OCTAL_LIMIT
        fits = fits and 0 <= mtime < _OCTAL_LIMIT
    except UnicodeEncodeError:
        fits = False
    if not fits:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime, info.linkname = kind, mode, size, mtime, linkname
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    block = b"".join(
        (
            raw_name.ljust(100, _NUL),
            b"%07o\0" % (mode & 0o7777),
            _IDS,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",  # the checksum is computed with this field as spaces
            kind,
            raw_link.ljust(100, _NUL),
            _HEADER_TAIL,
        )
    )
    return b"%s%06o\0%s" % (block[:148], sum(block), block[155:])


def _walk(root: Path, matcher: _Matcher, prefix: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, absolute path, lstat) of every entry to pack, depth first in sorted name order.

    Sockets, fifos and device files are skipped: they cannot be deployed as files, and a device
    node extracted by root on a host would open that host's disks or memory.
    """
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name.encode("utf-8", "surrogateescape"))
    for entry in entries:
        if entry.name in _ALWAYS_EXCLUDED:
            continue
        rel = f"{prefix}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if matcher.excluded(rel, is_dir):
            continue
        if is_dir:
            yield rel, entry.path, st
            yield from _walk(Path(entry.path), matcher, f"{rel}/")
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield rel, entry.path, st


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown archive format {fmt!r} (use one of {', '.join(FORMATS)})", field="fmt")


WORKDIR_PREFIX = "build-"


def sweep_workdirs(workdir: Path, *, older_than: float, now: float | None = None) -> list[Path]:
    """Remove build directories older than ``older_than`` seconds: what a builder killed mid-build left.

    A build removes its own directory when it ends, failed or not (``worker.build``); only a
    killed process leaves one, so the age only has to exceed the longest build (hooks time out)."""
    now = time.time() if now is None else now
    removed = []
    for path in sorted(workdir.glob(f"{WORKDIR_PREFIX}*")) if workdir.is_dir() else []:
        try:
            age = now - path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if age >= older_than and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
