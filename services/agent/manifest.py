"""What an artifact holds, file by file: path, kind, mode, size, mtime and sha256 (or symlink target).

The agent reads it once per artifact digest from its local copy of the archive (one streaming
pass: decompress, walk the tar, hash each file) and keeps it in memory and, when given a
directory, on disk beside the cached artifact. Each host keeps the manifest of every release it
holds under <deploy_path>/.ferry/manifests/<digest>.gz, so a delta upload can be planned against
whatever release the host already has, by any agent.

Only plain artifacts qualify: regular files, directories and symlinks under clean relative
paths (no '..', no control characters, valid UTF-8), each named once. Anything else raises
`Unsupported`, and the upload sends the whole artifact as before.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

HEADER = "ferry-manifest 1"
_CHUNK = 1024 * 1024
IMPLICIT_DIR_MODE = 0o755  # parent dirs the tar does not list; the delta tar creates them with this mode

Kind = Literal["f", "d", "l"]


class Unsupported(Exception):
    """The artifact (or a stored manifest) cannot take part in a delta upload."""


@dataclass(frozen=True)
class Entry:
    path: str
    kind: Kind
    mode: int  # permission bits (& 0o7777); 0 for symlinks
    size: int = 0  # regular files only
    mtime: int = 0  # regular files only: what tar restores on extraction
    sha256: str = ""  # regular files only
    target: str = ""  # symlinks only


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry]  # by path

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries.values())

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries.values() if e.kind == "f")


def check_path(path: str) -> str:
    """A clean relative path: no leading '/', no '', '.' or '..' parts, printable UTF-8."""
    if not path or path.startswith("/") or not _printable(path):
        raise Unsupported(f"unsupported path in artifact: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise Unsupported(f"unsupported path in artifact: {path!r}")
    return path


def _printable(text: str) -> bool:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return False
    try:
        text.encode("utf-8")  # surrogate escapes (undecodable names) fail here
    except UnicodeEncodeError:
        return False
    return True


# --- building from an archive ----------------------------------------------------------
def from_archive(stream: IO[bytes], fmt: str) -> Manifest:
    """Read a .tar / .tar.gz / .tar.zst stream to its end and list what extraction would create."""
    entries: dict[str, Entry] = {}
    with open_tar(stream, fmt) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            if name in ("", "."):
                continue  # the release dir itself
            path = check_path(name)
            if path in entries:
                raise Unsupported(f"{path!r} appears twice in the artifact")
            entries[path] = _entry(tar, member, path)
    return Manifest(_with_parents(entries))


def open_tar(stream: IO[bytes], fmt: str) -> tarfile.TarFile:
    """A streaming (forward-only) tar reader over a compressed or plain archive."""
    if fmt == "zst":
        import zstandard

        raw: Any = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return tarfile.open(fileobj=raw, mode="r|")
    if fmt == "gz":
        return tarfile.open(fileobj=stream, mode="r|gz")
    if fmt == "none":
        return tarfile.open(fileobj=stream, mode="r|")
    raise Unsupported(f"unknown artifact format {fmt!r}")


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> Entry:
    if member.isreg():
        sha = hashlib.sha256()
        data = tar.extractfile(member)
        assert data is not None
        while chunk := data.read(_CHUNK):
            sha.update(chunk)
        return Entry(path, "f", member.mode & 0o7777, member.size, int(member.mtime), sha.hexdigest())
    if member.isdir():
        return Entry(path, "d", member.mode & 0o7777)
    if member.issym():
        if not member.linkname or not _printable(member.linkname):
            raise Unsupported(f"unsupported symlink target for {path!r}")
        return Entry(path, "l", 0, target=member.linkname)
    raise Unsupported(f"{path!r} is neither a file, a directory nor a symlink")


def _with_parents(entries: dict[str, Entry]) -> dict[str, Entry]:
    """Add the parent dirs the tar leaves implicit, so the manifest lists every path it creates."""
    out = dict(entries)
    for path, entry in entries.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            known = out.get(parent)
            if known is None:
                out[parent] = Entry(parent, "d", IMPLICIT_DIR_MODE)
            elif known.kind != "d":
                raise Unsupported(f"{parent!r} is both a {known.kind} entry and the parent of {entry.path!r}")
    return out


# --- encoding ----------------------------------------------------------------------------
def encode(manifest: Manifest) -> bytes:
    """gzip of a line per entry, tab-separated, the path last (the host stores it as it is)."""
    lines = [HEADER]
    for e in sorted(manifest.entries.values(), key=lambda e: e.path.encode()):
        extra = e.sha256 if e.kind == "f" else e.target if e.kind == "l" else "-"
        lines.append(f"{e.kind}\t{e.mode:o}\t{e.size}\t{e.mtime}\t{extra}\t{e.path}")
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)


def decode(data: bytes) -> Manifest:
    """The inverse of encode(); anything malformed raises Unsupported (the manifest came from a host)."""
    try:
        text = gzip.decompress(data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise Unsupported(f"unreadable manifest: {exc}") from exc
    lines = text.split("\n")
    if not lines or lines[0] != HEADER or lines[-1] != "":
        raise Unsupported("not a ferry manifest")
    entries: dict[str, Entry] = {}
    for line in lines[1:-1]:
        entry = _decode_line(line)
        if entry.path in entries:
            raise Unsupported(f"{entry.path!r} appears twice in the manifest")
        entries[entry.path] = entry
    return Manifest(entries)


def _decode_line(line: str) -> Entry:
    fields = line.split("\t")
    if len(fields) != 6:
        raise Unsupported(f"malformed manifest line: {line[:200]!r}")
    kind, mode, size, mtime, extra, path = fields
    check_path(path)
    try:
        mode_bits, size_n, mtime_n = int(mode, 8), int(size), int(mtime)
    except ValueError as exc:
        raise Unsupported(f"malformed manifest line: {line[:200]!r}") from exc
    if not 0 <= mode_bits <= 0o7777 or size_n < 0:
        raise Unsupported(f"malformed manifest line: {line[:200]!r}")
    if kind == "f":
        if len(extra) != 64 or any(c not in "0123456789abcdef" for c in extra):
            raise Unsupported(f"malformed digest for {path!r}")
        return Entry(path, "f", mode_bits, size_n, mtime_n, extra)
    if kind == "d":
        return Entry(path, "d", mode_bits)
    if kind == "l" and extra:
        return Entry(path, "l", 0, target=extra)
    raise Unsupported(f"malformed manifest line: {line[:200]!r}")


# --- the agent's cache -----------------------------------------------------------------
class ManifestCache:
    """Manifests by artifact digest: a few in memory, and optionally files in a directory."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._memory: OrderedDict[str, Manifest] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def get(self, digest: str, directory: Path | None = None) -> Manifest | None:
        with self._lock:
            found = self._memory.get(digest)
            if found is not None:
                self._memory.move_to_end(digest)
                return found
        if directory is not None:
            path = directory / f"{digest}.manifest.gz"
            try:
                found = decode(path.read_bytes())
            except (OSError, Unsupported):
                return None
            self.put(digest, found)
        return found

    def put(self, digest: str, manifest: Manifest, directory: Path | None = None) -> None:
        with self._lock:
            self._memory[digest] = manifest
            self._memory.move_to_end(digest)
            while len(self._memory) > self.limit:
                self._memory.popitem(last=False)
        if directory is not None:
            path = directory / f"{digest}.manifest.gz"
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
            try:
                tmp.write_bytes(encode(manifest))
                tmp.replace(path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a read-only cache dir only costs a re-read later

    def of_artifact(
        self, digest: str, fmt: str, open_stream: Callable[[], IO[bytes]], directory: Path | None = None
    ) -> Manifest:
        """The artifact's manifest, read from the archive only once per digest (threads wait for it)."""
        found = self.get(digest, directory)
        if found is not None:
            return found
        with self._lock:
            building = self._building.setdefault(digest, threading.Lock())
        with building:
            found = self.get(digest, directory)
            if found is None:
                stream = open_stream()
                try:
                    reader = _Hashing(stream)
                    found = from_archive(reader, fmt)  # type: ignore[arg-type]
                    while reader.read(_CHUNK):  # past the tar's end-of-archive blocks
                        pass
                finally:
                    stream.close()
                if reader.sha.hexdigest() != digest:
                    raise Unsupported(f"the local artifact does not match its digest {digest}")
                self.put(digest, found, directory)
        return found


class _Hashing:
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data


CACHE = ManifestCache()
