"""Capistrano layout on a host, one function per step, over a `HostSession`.

    <deploy_path>/releases/<release_id>/    extracted artifact (+ .ferry-artifact: its digest)
    <deploy_path>/shared/                    files and dirs kept across releases
    <deploy_path>/current -> releases/<id>   switched with rename(2)
    <deploy_path>/.ferry/artifacts/<digest>.tar[.zst|.gz]   the host's artifact cache

Every function is safe to re-run after a crash at any point, and every path
that reaches a shell is validated and quoted.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

from ferry.errors import InvalidInput, InvalidPath
from services.agent.ssh import CommandResult, HostSession

_RELEASE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")  # sha256 hex of the artifact bytes as stored (compressed)
# format -> (suffix in the cache, tar's decompression flag)
FORMATS: dict[str, tuple[str, list[str]]] = {
    "zst": (".tar.zst", ["--zstd"]),
    "gz": (".tar.gz", ["-z"]),
    "none": (".tar", []),
}
_SUFFIX_FORMAT = {suffix: fmt for fmt, (suffix, _) in FORMATS.items()}
MARKER = ".ferry-artifact"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    output: str
    duration: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# --- validation ------------------------------------------------------------
def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def validate_deploy_path(path: str) -> str:
    """An absolute path without '..' or control characters; returned without a trailing slash."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidPath(f"deploy path must be absolute: {path!r}", field="deploy_path")
    if _has_control(path):
        raise InvalidPath("deploy path contains control characters", field="deploy_path")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise InvalidPath(f"deploy path must not contain '.' or '..': {path!r}", field="deploy_path")
    clean = path.rstrip("/")
    if not clean:
        raise InvalidPath("deploy path must not be '/'", field="deploy_path")
    return clean


def validate_release_id(release_id: str) -> str:
    if not isinstance(release_id, str) or not _RELEASE_ID.match(release_id):
        raise InvalidPath(f"release id must match [A-Za-z0-9_-]+: {release_id!r}", field="release_id")
    return release_id


def validate_relative_path(path: str, field_name: str = "shared") -> str:
    """A path inside the release: relative, no '..', '.', empty parts or control characters."""
    if not isinstance(path, str) or not path or path.startswith("/") or _has_control(path):
        raise InvalidPath(f"shared path must be a relative path: {path!r}", field=field_name)
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidPath(f"shared path must not contain '', '.' or '..' parts: {path!r}", field=field_name)
    return "/".join(parts)


def validate_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidInput(f"artifact digest must be sha256 hex: {digest!r}", field="digest")
    return digest


# --- helpers -----------------------------------------------------------------
def ferry_env(
    session: HostSession,
    deploy_path: str,
    release_id: str | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every hook, restart and health command sees (ferry's names win over extras)."""
    env = dict(extra or {})
    env.update(
        FERRY_DEPLOY_PATH=deploy_path,
        FERRY_HOST_ADDRESS=session.target.address,
        FERRY_HOST_NAME=session.target.name,
    )
    if release_id is not None:
        env.update(FERRY_RELEASE_ID=release_id, FERRY_RELEASE_PATH=f"{deploy_path}/releases/{release_id}")
    return env


def _q(path: str) -> str:
    return shlex.quote(path)


def _script(*lines: str) -> str:
    return "set -e\n" + "\n".join(lines) + "\n"


def _step(
    result: CommandResult, detail: dict[str, Any] | None = None, started: float | None = None
) -> StepResult:
    duration = time.monotonic() - started if started is not None else result.duration
    return StepResult(result.exit_code, result.output, duration, detail or {})


def _values(output: str, key: str) -> list[str]:
    prefix = f"{key}="
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def _value(output: str, key: str) -> str | None:
    found = _values(output, key)
    return found[-1] if found else None


def _release_of(target: str | None) -> str | None:
    """'releases/<id>' (or an absolute path to it) -> '<id>'; '' or None -> None."""
    if not target:
        return None
    return target.rstrip("/").rsplit("/", 1)[-1]


# --- steps -----------------------------------------------------------------
def prepare(session: HostSession, deploy_path: str, *, timeout: float = 60.0) -> StepResult:
    """Create releases/, shared/ and .ferry/ under the deploy path."""
    dp = validate_deploy_path(deploy_path)
    result = session.run(
        f"mkdir -p {_q(dp + '/releases')} {_q(dp + '/shared')} {_q(dp + '/.ferry/artifacts')}",
        timeout=timeout,
    )
    return _step(result, {"deploy_path": dp})


def _probe(session: HostSession, dp: str, release_id: str, digest: str, timeout: float) -> dict[str, Any]:
    rel = f"releases/{release_id}"
    cached = " ".join(_q(f".ferry/artifacts/{digest}{suffix}") for suffix, _ in FORMATS.values())
    result = session.run(
        _script(
            f"mkdir -p {_q(dp)}",
            f"cd {_q(dp)}",
            "mkdir -p releases shared .ferry/artifacts",
            f"rm -f .ferry/artifacts/.partial-{digest}-*",  # left by an upload that crashed
            f'if [ -f {_q(rel + "/" + MARKER)} ]; then echo "release=$(cat {_q(rel + "/" + MARKER)})";',
            f"elif [ -e {_q(rel)} ]; then echo release=incomplete; fi",
            f'for f in {cached}; do if [ -f "$f" ]; then echo "cached=$f"; fi; done',
            "if command -v zstd >/dev/null 2>&1; then echo zstd=yes; fi",
        ),
        timeout=timeout,
    )
    if not result.ok:
        raise _StepFailed(result)
    return {
        "release": _value(result.output, "release"),
        "cached": _values(result.output, "cached"),
        "zstd": _value(result.output, "zstd") == "yes",
    }


class _StepFailed(Exception):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.output)
        self.result = result


class _HashingReader:
    """Reads through a stream, hashing and counting what passed."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(_READ_CHUNK):
            pass


def host_has_artifact(session: HostSession, deploy_path: str, digest: str, *, timeout: float = 30.0) -> bool:
    """Whether the host's artifact cache already holds this digest."""
    dp = validate_deploy_path(deploy_path)
    validate_digest(digest)
    names = " ".join(_q(f"{dp}/.ferry/artifacts/{digest}{suffix}") for suffix, _ in FORMATS.values())
    result = session.run(f'for f in {names}; do if [ -f "$f" ]; then echo yes; fi; done', timeout=timeout)
    return "yes" in result.output.split()


def upload_artifact(
    session: HostSession,
    deploy_path: str,
    release_id: str,
    digest: str,
    fmt: str,
    open_stream: Callable[[], IO[bytes]],
    *,
    timeout: float = 600.0,
) -> StepResult:
    """Make releases/<release_id> hold the artifact, transferring it only when the host lacks it.

    The host keeps the archive itself under .ferry/artifacts/ rather than treating an older
    release dir as the cache: release dirs change after extraction (shared links, hook output),
    so only the archive is a faithful copy. prune() drops archives no kept release uses.
    """
    started = time.monotonic()
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    validate_digest(digest)
    if fmt not in FORMATS:
        raise InvalidInput(f"artifact format must be one of {sorted(FORMATS)}: {fmt!r}", field="format")
    detail: dict[str, Any] = {"digest": digest, "format": fmt, "transferred": 0, "reused": False}
    try:
        probe = _probe(session, dp, release_id, digest, timeout)
    except _StepFailed as failed:
        return _step(failed.result, detail, started)

    if probe["release"] == digest:
        detail.update(reused=True, already_extracted=True)
        return StepResult(
            0, f"releases/{release_id} already holds {digest}\n", time.monotonic() - started, detail
        )
    if probe["release"] not in (None, "incomplete"):
        detail["conflict"] = probe["release"]
        message = f"releases/{release_id} already holds another artifact ({probe['release']})\n"
        return StepResult(1, message, time.monotonic() - started, detail)

    output: list[str] = []
    partial = None
    usable = [c for c in probe["cached"] if not c.endswith(".tar.zst") or probe["zstd"]]
    if usable:
        archive = usable[0]
        detail["reused"] = True
        output.append(f"host already holds {digest}; nothing transferred")
    else:
        try:
            archive, partial, sent, note = _transfer(session, dp, digest, fmt, probe["zstd"], open_stream)
        except _StepFailed as failed:
            return _step(failed.result, detail, started)
        except OSError as exc:
            return StepResult(1, f"upload failed: {exc}\n", time.monotonic() - started, detail)
        detail["transferred"] = sent
        detail["decompressed_on_agent"] = note is not None
        output.append(f"transferred {sent} bytes in {time.monotonic() - started:.2f}s")
        if note:
            output.append(note)
    detail["stored_as"] = archive.rsplit("/", 1)[-1]

    suffix = archive.rsplit("/", 1)[-1][len(digest) :]
    flags = " ".join(FORMATS[_SUFFIX_FORMAT.get(suffix, "none")][1])
    rel, tmp = f"releases/{release_id}", f"releases/.tmp-{release_id}"
    # Extract into a temp dir that is renamed into place: a half-extracted release never looks complete.
    result = session.run(
        _script(
            f"cd {_q(dp)}",
            f"mv -f {_q(partial)} {_q(archive)}" if partial else ":",
            f"rm -rf {_q(tmp)}",
            f"mkdir {_q(tmp)}",
            f"tar -x --no-same-owner {flags} -f {_q(archive)} -C {_q(tmp)}",
            f"printf '%s\\n' {digest} > {_q(tmp + '/' + MARKER)}",
            f"if [ -e {_q(rel)} ]; then",
            f'  if [ "$(readlink current || true)" = {_q(rel)} ]; then',
            f"    echo 'refusing to replace the live release {rel}' >&2; exit 3",
            "  fi",
            f"  rm -rf {_q(rel)}",
            "fi",
            f"mv -T {_q(tmp)} {_q(rel)}",
            f"echo extracted into {_q(rel)}",
        ),
        timeout=timeout,
    )
    output.append(result.output.rstrip("\n"))
    return StepResult(result.exit_code, "\n".join(output) + "\n", time.monotonic() - started, detail)


def _transfer(
    session: HostSession,
    dp: str,
    digest: str,
    fmt: str,
    host_has_zstd: bool,
    open_stream: Callable[[], IO[bytes]],
) -> tuple[str, str, int, str | None]:
    """Upload the artifact next to the host's cache; returns (cache path, partial path, bytes sent, note).

    The caller renames the partial file into the cache: only whole, verified archives are cached.
    """
    partial = f".ferry/artifacts/.partial-{digest}-{secrets.token_hex(4)}"
    note = None
    stream = open_stream()
    try:
        source = _HashingReader(stream)
        if fmt == "zst" and not host_has_zstd:
            import zstandard  # only needed for hosts without zstd

            reader: Any = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], source), read_across_frames=True
            )
            final = f".ferry/artifacts/{digest}.tar"
            note = "host has no zstd: decompressed on the agent, sent a plain tar"
        else:
            reader = source
            final = f".ferry/artifacts/{digest}{FORMATS[fmt][0]}"
        sent = session.upload(reader, f"{dp}/{partial}")
        source.drain()  # hash any bytes past the end of the last zstd frame too
    finally:
        stream.close()
    if source.sha.hexdigest() != digest:
        session.run(f"rm -f {_q(dp + '/' + partial)}", timeout=60)
        mismatch = f"artifact digest mismatch: expected {digest}, read {source.sha.hexdigest()}\n"
        raise _StepFailed(CommandResult(1, mismatch, 0.0))
    return final, partial, sent, note


def link_shared(
    session: HostSession,
    deploy_path: str,
    release_id: str,
    shared_files: Iterable[str] = (),
    shared_dirs: Iterable[str] = (),
    *,
    timeout: float = 60.0,
) -> StepResult:
    """Point release/<p> at shared/<p> for each shared file and dir (creating them under shared/)."""
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    files = [validate_relative_path(p, "shared_files") for p in shared_files]
    dirs = [validate_relative_path(p, "shared_dirs") for p in shared_dirs]
    rel = f"releases/{release_id}"
    lines = [f"cd {_q(dp)}", f"test -d {_q(rel)} || {{ echo 'no such release: {rel}' >&2; exit 2; }}"]
    for p in dirs:
        lines.append(f"mkdir -p {_q('shared/' + p)}")
    for p in files:
        shared = _q("shared/" + p)
        lines.append(f'mkdir -p "$(dirname {shared})"; [ -e {shared} ] || : > {shared}')
    for p in [*dirs, *files]:
        target = _q(f"{rel}/{p}")
        lines += [
            f'mkdir -p "$(dirname {target})"',
            f"rm -rf {target}",
            f"ln -s {_q(f'{dp}/shared/{p}')} {target}",
            f"echo linked {target}",
        ]
    result = session.run(_script(*lines), timeout=timeout)
    return _step(result, {"files": files, "dirs": dirs})


def run_hook(
    session: HostSession,
    deploy_path: str,
    release_id: str,
    command: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> StepResult:
    """Run a project hook in the release dir; no command means a skipped step."""
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    if not command or not command.strip():
        return StepResult(0, "", 0.0, {"skipped": True})
    result = session.run(
        command,
        env=ferry_env(session, dp, release_id, env),
        cwd=f"{dp}/releases/{release_id}",
        timeout=timeout,
    )
    return _step(result, {"skipped": False})


def _switch(session: HostSession, dp: str, release_id: str, timeout: float) -> StepResult:
    rel = f"releases/{release_id}"
    link = f"current.tmp-{secrets.token_hex(6)}"
    result = session.run(
        _script(
            f"cd {_q(dp)}",
            f"test -d {_q(rel)} || {{ echo 'no such release: {rel}' >&2; exit 2; }}",
            "mkdir -p .ferry",
            'prev="$(readlink current 2>/dev/null || true)"',
            f'if [ "$prev" = {_q(rel)} ]; then',
            '  echo "FERRY_LAST=$(cat .ferry/last-switch 2>/dev/null || true)"',
            "  echo FERRY_ALREADY=1",
            "  exit 0",
            "fi",
            # Remember what this switch replaced, so a re-run after a crash still reports it.
            f"printf '%s %s\\n' {release_id} \"${{prev##*/}}\" > .ferry/last-switch.tmp",
            "mv -f .ferry/last-switch.tmp .ferry/last-switch",
            f"ln -sfn {_q(rel)} {link}",
            f"mv -T {link} current",  # rename(2): atomic
            'echo "FERRY_PREVIOUS=$prev"',
        ),
        timeout=timeout,
    )
    detail: dict[str, Any] = {"release": release_id, "previous": None, "already_current": False}
    if result.ok:
        if _value(result.output, "FERRY_ALREADY") == "1":
            detail["already_current"] = True
            last = (_value(result.output, "FERRY_LAST") or "").split()
            if len(last) == 2 and last[0] == release_id:
                detail["previous"] = last[1]
        else:
            detail["previous"] = _release_of(_value(result.output, "FERRY_PREVIOUS"))
    return _step(result, detail)


def activate(session: HostSession, deploy_path: str, release_id: str, *, timeout: float = 60.0) -> StepResult:
    """Point `current` at releases/<release_id> atomically; detail['previous'] is the release it replaced."""
    return _switch(session, validate_deploy_path(deploy_path), validate_release_id(release_id), timeout)


def rollback(
    session: HostSession, deploy_path: str, to_release_id: str, *, timeout: float = 60.0
) -> StepResult:
    """Switch `current` back to an earlier release, atomically (restart separately)."""
    return _switch(session, validate_deploy_path(deploy_path), validate_release_id(to_release_id), timeout)


def current_release(session: HostSession, deploy_path: str, *, timeout: float = 30.0) -> str | None:
    dp = validate_deploy_path(deploy_path)
    result = session.run(f"readlink {_q(dp + '/current')} || true", timeout=timeout)
    return _release_of(result.output.strip())


def restart(
    session: HostSession,
    deploy_path: str,
    command: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> StepResult:
    """Run the project's restart command in `current`."""
    dp = validate_deploy_path(deploy_path)
    if not command or not command.strip():
        return StepResult(0, "", 0.0, {"skipped": True})
    release_id = current_release(session, dp)
    if release_id is None:
        return StepResult(1, f"{dp}/current does not exist; nothing to restart\n", 0.0, {"skipped": False})
    result = session.run(
        command, env=ferry_env(session, dp, release_id, env), cwd=f"{dp}/current", timeout=timeout
    )
    return _step(result, {"skipped": False, "release": release_id})


def prune(
    session: HostSession,
    deploy_path: str,
    keep: int,
    protect: Iterable[str] = (),
    *,
    timeout: float = 300.0,
) -> StepResult:
    """Remove all but the newest `keep` releases; never the live one or those in `protect`."""
    started = time.monotonic()
    dp = validate_deploy_path(deploy_path)
    if keep < 1:
        raise InvalidInput("keep must be at least 1", field="keep")
    protected = {validate_release_id(r) for r in protect}
    listing = session.run(
        _script(
            f"cd {_q(dp)}",
            'echo "FERRY_CURRENT=$(readlink current 2>/dev/null || true)"',
            "find releases -mindepth 1 -maxdepth 1 -type d -printf 'FERRY_RELEASE=%T@ %f\\n'",
        ),
        timeout=timeout,
    )
    if not listing.ok:
        return _step(listing, {}, started)
    live = _release_of(_value(listing.output, "FERRY_CURRENT"))
    releases = []
    for row in _values(listing.output, "FERRY_RELEASE"):
        mtime, _, name = row.partition(" ")
        if _RELEASE_ID.match(name):  # skips .tmp-* dirs of uploads in progress
            releases.append((float(mtime), name))
    releases.sort(reverse=True)
    newest = {name for _, name in releases[:keep]}
    spared = newest | protected | ({live} if live else set())
    victims = [name for _, name in releases if name not in spared]
    removal = " ".join(_q(f"releases/{v}") for v in victims)
    result = session.run(
        _script(
            f"cd {_q(dp)}",
            f"rm -rf -- {removal}" if victims else "true",
            # Drop cached archives that no remaining release was extracted from (dot-files are partials).
            f'inuse="$(cat releases/*/{MARKER} 2>/dev/null | tr "\\n" " " || true)"',
            "for f in .ferry/artifacts/*; do",
            '  [ -f "$f" ] || continue',
            '  d="${f##*/}"; d="${d%%.*}"',
            '  case " $inuse " in *" $d "*) ;; *) rm -f -- "$f"; echo "FERRY_ARTIFACT_REMOVED=$d" ;; esac',
            "done",
        ),
        timeout=timeout,
    )
    detail = {
        "removed": victims,
        "kept": sorted(name for _, name in releases if name in spared),
        "live": live,
        "artifacts_removed": _values(result.output, "FERRY_ARTIFACT_REMOVED"),
    }
    summary = "".join(f"removed releases/{v}\n" for v in victims) or "nothing to prune\n"
    return StepResult(result.exit_code, summary + result.output, time.monotonic() - started, detail)
