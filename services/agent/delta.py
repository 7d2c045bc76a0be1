"""Delta uploads, the pure part: which files a host can hard-link from a release it holds.

A file of the new artifact is linked from the base release when the base's manifest has the
same path with the same sha256, size and mode, and the host's listing of the base shows that
file untouched since extraction (same kind, mode, size and mtime: the quick check rsync -a
makes). Everything else (new and changed files, files a hook or a shared link replaced in the
base) travels in the delta. Linking shares the inode, so the new release's linked files keep
the base's mtime; contents and modes are the artifact's.

After assembly the host lists the new tree in the same format and compares the sha256 of that
listing with `expected_listing()`: any difference (a file missing, a mode, a size, an mtime that
moved under us, a stray entry) and the step falls back to sending the whole artifact.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any

from services.agent.manifest import Entry, Manifest, open_tar

# One line per entry under the current directory: path, kind, mode, size, mtime, symlink target.
# Directories and symlinks carry no size or mtime (they change as entries come and go).
LIST_TREE = (
    "find . -mindepth 1"
    " \\( -type f -printf '%P\\tf\\t%m\\t%s\\t%Ts\\t\\n' \\)"
    " -o \\( -type d -printf '%P\\td\\t%m\\t0\\t0\\t\\n' \\)"
    " -o \\( -type l -printf '%P\\tl\\t0\\t0\\t0\\t%l\\n' \\)"
    " -o -printf '%P\\t?\\t0\\t0\\t0\\t\\n'"
    " | LC_ALL=C sort"
)
# Control members of the delta tar, beside tree/ (the new release's dirs, symlinks and sent files).
LINKS = "links"  # NUL-separated paths to hard-link from the base release
MANIFEST = "manifest.gz"
TREE = "tree"


@dataclass(frozen=True)
class Listed:
    kind: str
    mode: int
    size: int
    mtime: int
    target: str


@dataclass(frozen=True)
class Plan:
    link: list[str]  # regular files to hard-link from the base, by path
    send: list[str]  # regular files to send
    send_bytes: int  # their total size
    expected: str  # the listing the assembled tree must show
    dirty: list[str]  # base files the manifest would allow linking but the host has changed
    mtimes: dict[str, int]  # linked files: the base's mtime, which they keep

    @property
    def expected_sha256(self) -> str:
        return hashlib.sha256(self.expected.encode()).hexdigest()


def parse_listing(text: str) -> dict[str, Listed | None]:
    """LIST_TREE output -> path: entry; a path listed twice (a name with a newline in it) maps to None."""
    out: dict[str, Listed | None] = {}
    for line in text.split("\n"):
        fields = line.split("\t")
        if len(fields) != 6:
            continue  # a fragment of a strange name: its path cannot match a manifest path
        path, kind, mode, size, mtime, target = fields
        try:
            entry: Listed | None = Listed(kind, int(mode, 8), int(size), int(mtime), target)
        except ValueError:
            entry = None
        out[path] = None if path in out else entry
    return out


def untouched(entry: Entry, listed: Listed | None) -> bool:
    """Whether the base's file on disk is still what the manifest says tar extracted."""
    return (
        listed is not None
        and listed.kind == "f"
        and listed.mode == entry.mode
        and listed.size == entry.size
        and listed.mtime == entry.mtime
    )


def plan(new: Manifest, base: Manifest, base_listing: dict[str, Listed | None]) -> Plan:
    """Split the new artifact's files into those to link from the base and those to send."""
    link: list[str] = []
    send: list[str] = []
    dirty: list[str] = []
    send_bytes = 0
    mtimes: dict[str, int] = {}
    for entry in sorted(new.files(), key=lambda e: e.path.encode()):
        old = base.entries.get(entry.path)
        same = (
            old is not None
            and old.kind == "f"
            and (old.sha256, old.size, old.mode) == (entry.sha256, entry.size, entry.mode)
        )
        if same and old is not None and untouched(old, base_listing.get(entry.path)):
            link.append(entry.path)
            mtimes[entry.path] = old.mtime  # a hard link shares the base's inode, mtime included
        else:
            if same:
                dirty.append(entry.path)
            send.append(entry.path)
            send_bytes += entry.size
    return Plan(link, send, send_bytes, expected_listing(new, mtimes), dirty, mtimes)


def as_assembled(new: Manifest, the_plan: Plan) -> Manifest:
    """The new release's manifest as it will be on disk (linked files keep the base's mtime): the
    host keeps this one, so the next delta's quick check compares against what is really there."""
    entries = dict(new.entries)
    for path, mtime in the_plan.mtimes.items():
        entries[path] = replace(entries[path], mtime=mtime)
    return Manifest(entries)


def expected_listing(new: Manifest, mtimes: dict[str, int] | None = None) -> str:
    """What LIST_TREE prints for a tree holding exactly `new` (files' mtimes overridden by `mtimes`)."""
    mtimes = mtimes or {}
    lines = []
    for e in new.entries.values():
        if e.kind == "f":
            lines.append(f"{e.path}\tf\t{e.mode:o}\t{e.size}\t{mtimes.get(e.path, e.mtime)}\t")
        elif e.kind == "d":
            lines.append(f"{e.path}\td\t{e.mode:o}\t0\t0\t")
        else:
            lines.append(f"{e.path}\tl\t0\t0\t0\t{e.target}")
    lines.sort(key=str.encode)  # LC_ALL=C sort: byte order of whole lines
    return "".join(line + "\n" for line in lines)


def listing_differences(expected: str, got: str, limit: int = 5) -> list[str]:
    """A few human-readable differences between two listings (for the step's output)."""
    want, have = set(expected.splitlines()), set(got.splitlines())
    missing = sorted(want - have)[:limit]
    extra = sorted(have - want)[:limit]
    return [f"expected {line!r}" for line in missing] + [f"found {line!r}" for line in extra]


# --- the delta archive ---------------------------------------------------------------------
def write_delta(
    out: IO[bytes],
    new: Manifest,
    the_plan: Plan,
    manifest_bytes: bytes,
    open_artifact: Callable[[], IO[bytes]],
    fmt: str,
) -> int:
    """Write the delta tar (control members, then tree/) into `out`; returns the files sent.

    The sent files' bytes come from one streaming pass over the artifact itself.
    """
    wanted = set(the_plan.send)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, LINKS, b"".join(p.encode() + b"\0" for p in the_plan.link))
        _add_bytes(tar, MANIFEST, manifest_bytes)
        tar.addfile(_info(TREE, tarfile.DIRTYPE, 0o755))
        for e in sorted(new.entries.values(), key=lambda e: e.path.encode()):
            if e.kind == "d":
                tar.addfile(_info(f"{TREE}/{e.path}", tarfile.DIRTYPE, e.mode))
            elif e.kind == "l":
                tar.addfile(_info(f"{TREE}/{e.path}", tarfile.SYMTYPE, 0o777, linkname=e.target))
        sent = 0
        if wanted:
            stream = open_artifact()
            try:
                with open_tar(stream, fmt) as source:
                    for member in source:
                        path = member.name.removeprefix("./").rstrip("/")
                        if path not in wanted or not member.isreg():
                            continue
                        entry = new.entries[path]
                        info = _info(f"{TREE}/{path}", tarfile.REGTYPE, entry.mode, entry.size, entry.mtime)
                        tar.addfile(info, source.extractfile(member))
                        sent += 1
            finally:
                stream.close()
        if sent != len(wanted):
            raise ValueError(f"the artifact yielded {sent} of the {len(wanted)} files to send")
    return sent


def _info(name: str, kind: bytes, mode: int, size: int = 0, mtime: int = 0, linkname: str = "") -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime, info.linkname = kind, mode, size, mtime, linkname
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, 0o600, len(data)), io.BytesIO(data))


def choose_base(
    candidates: list[tuple[str, str]], digest: str, preferred: str | None, current: str | None
) -> tuple[str, str] | None:
    """The (release, digest) to build from: one holding this very digest (nothing to send), else the
    release the caller named, else the live one, else the newest (candidates come newest first)."""
    for wanted in (
        [c for c in candidates if c[1] == digest],
        [c for c in candidates if preferred is not None and c[0] == preferred],
        [c for c in candidates if current is not None and c[0] == current],
        candidates,
    ):
        if wanted:
            return wanted[0]
    return None
