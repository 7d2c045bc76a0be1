"""Delta uploads, the host side: build releases/<new>/ from a release the host holds plus the changed files.

    1. the agent picks the base (a release holding this digest, else the named one, else `current`,
       else the newest) among the releases whose manifest the host keeps;
    2. it reads the base's manifest (from its cache, else the host's copy) and a listing of the base
       release as it is on disk now (over SFTP: listings outgrow a command's output tail);
    3. it sends one tar: the list of files to hard-link, the new manifest, and tree/ with every
       directory, symlink and changed file; the host extracts that into a fresh tree, hard-links the
       unchanged files from the base (`cp -l`: the base is only read, and changed files are new inodes
       from the tar, never writes through a link), lists the result and compares it with what the
       agent expects before renaming it into place.

Every failure before the rename returns a reason, and the caller sends the whole artifact instead.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from services.agent import delta, manifest
from services.agent.layout import EXTRACT_FLAGS, MARKER, StepResult, q, script
from services.agent.ssh import HostSession

LISTING_LIMIT = 256 * 1024 * 1024
MAX_SHARE = 0.5  # send the whole artifact when the changed files are more than this share of its bytes
_KEPT_DELTAS = 4
_KEPT_DELTA_BYTES = 32 * 1024 * 1024
_SPOOL = 16 * 1024 * 1024


class Fallback(Exception):
    """The delta cannot be used; the message says why, and the whole artifact goes instead."""


def stage_dir(release_id: str) -> str:
    return f".ferry/delta-{release_id}"


def manifest_path(release_id: str) -> str:
    """The manifest of releases/<release_id> as it was extracted or assembled (mtimes as on disk)."""
    return f".ferry/manifests/{release_id}.gz"


def send_delta(
    session: HostSession,
    dp: str,
    release_id: str,
    digest: str,
    fmt: str,
    open_stream: Callable[[], IO[bytes]],
    *,
    base: tuple[str, str],
    host_has_zstd: bool,
    manifest_dir: Path | None,
    timeout: float,
) -> StepResult:
    """Assemble releases/<release_id> from `base`; raises Fallback when the whole artifact must go."""
    started = time.monotonic()
    base_release, base_digest = base
    try:
        new = manifest.CACHE.of_artifact(digest, fmt, open_stream, manifest_dir)
        old = manifest.decode(_read(session, f"{dp}/{manifest_path(base_release)}"))
    except manifest.Unsupported as exc:
        raise Fallback(str(exc)) from exc
    stage = stage_dir(release_id)
    listed = session.run(
        script(
            f"cd {q(dp)}",
            f"rm -rf {q(stage)}",
            f"mkdir -p {q(stage)}",
            f"cd {q('releases/' + base_release)}",
            f"{delta.LIST_TREE} > {q(f'{dp}/{stage}/base.list')}",
        ),
        timeout=timeout,
    )
    if not listed.ok:
        raise Fallback(f"cannot list releases/{base_release}: {listed.output.strip()}")
    listing = delta.parse_listing(_read(session, f"{dp}/{stage}/base.list").decode("utf-8", "replace"))
    plan = delta.plan(new, old, listing)
    if plan.send_bytes > MAX_SHARE * max(new.total_size, 1):
        share = plan.send_bytes / max(new.total_size, 1)
        raise Fallback(f"{len(plan.send)} changed files hold {share:.0%} of the artifact's bytes")

    payload = _delta_bytes(new, plan, digest, base_digest, fmt, open_stream, host_has_zstd)
    assembly = _assemble(dp, release_id, digest, base_release, plan.expected_sha256, host_has_zstd)
    try:
        result, sent = session.stream_to_command(payload.open(), assembly, timeout=timeout)
    finally:
        payload.close()
    verified = "verified=yes" in result.output.splitlines()
    if result.exit_code == 3:  # the live release: sending the whole artifact would not help
        raise Refused(StepResult(3, result.output, time.monotonic() - started, {}))
    if not result.ok or not verified:
        reason = result.output.strip().splitlines()[-1:] or ["no output"]
        if "verified=no" in result.output.splitlines():
            got = _read(session, f"{dp}/{stage}/new.list").decode("utf-8", "replace")
            differences = delta.listing_differences(plan.expected, got)
            reason = ["the assembled tree differs: " + "; ".join(differences)]
        raise Fallback(f"delta assembly failed (exit {result.exit_code}): {reason[0]}")
    detail: dict[str, Any] = {
        "delta": True,
        "transferred": sent,
        "bytes_sent": sent,
        "files_sent": len(plan.send),
        "files_linked": len(plan.link),
        "base_release": base_release,
        "base_digest": base_digest,
    }
    if plan.dirty:
        detail["base_files_changed_on_host"] = len(plan.dirty)
    seconds = time.monotonic() - started
    text = (
        f"delta from releases/{base_release}: sent {len(plan.send)} files ({sent} bytes), "
        f"hard-linked {len(plan.link)} in {seconds:.2f}s\n"
    )
    return StepResult(0, text, seconds, detail)


class Refused(Exception):
    """The host refused the step itself (replacing the live release): no fallback would help."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.output)
        self.result = result


def _assemble(dp: str, release_id: str, digest: str, base: str, expected: str, zstd: bool) -> str:
    # The manifest is renamed into place before the release: a manifest without its release is
    # harmless (the probe lists only releases with a marker), a release without one only costs
    # the next upload its delta.
    stage, tmp, rel = stage_dir(release_id), f"releases/.tmp-{release_id}", f"releases/{release_id}"
    return script(
        f"cd {q(dp)}",
        f"rm -rf {q(tmp)} {q(stage + '/' + delta.TREE)}",
        f"mkdir -p {q(stage)}",
        f"(umask 0 && tar -x {EXTRACT_FLAGS} {'--zstd ' if zstd else ''}-f - -C {q(stage)})",
        f"mv -T {q(stage + '/' + delta.TREE)} {q(tmp)}",
        # cp -l only reads the base; -t and -- keep every listed path an operand.
        f"(cd {q('releases/' + base)} && xargs -0 -r cp -l --parents -t {q(f'{dp}/{tmp}')} --"
        f" < {q(f'{dp}/{stage}/{delta.LINKS}')})",
        f"(cd {q(tmp)} && {delta.LIST_TREE}) > {q(stage + '/new.list')}",
        f'got="$(sha256sum < {q(stage + "/new.list")})"',
        f'if [ "${{got%% *}}" != {q(expected)} ]; then rm -rf {q(tmp)}; echo verified=no; exit 4; fi',
        f"rm -rf {q(tmp + '/' + MARKER)}",
        f"printf '%s\\n' {digest} > {q(tmp + '/' + MARKER)}",
        "mkdir -p .ferry/manifests",
        f"mv -f {q(stage + '/' + delta.MANIFEST)} {q(manifest_path(release_id))}",
        f"if [ -e {q(rel)} ]; then",
        f'  if [ "$(readlink current || true)" = {q(rel)} ]; then',
        f"    echo 'refusing to replace the live release {rel}' >&2; exit 3",
        "  fi",
        f"  rm -rf {q(rel)}",
        "fi",
        f"mv -T {q(tmp)} {q(rel)}",
        f"rm -rf {q(stage)}",
        "echo verified=yes",
    )


def _read(session: HostSession, path: str) -> bytes:
    """A file from the host over SFTP (a command's output keeps only its last 64 KiB)."""
    try:
        with session.sftp().open(path, "rb") as f:
            f.prefetch()
            data = f.read(LISTING_LIMIT + 1)
    except OSError as exc:
        raise Fallback(f"cannot read {path} on the host: {exc}") from exc
    if len(data) > LISTING_LIMIT:
        raise Fallback(f"{path} on the host is larger than {LISTING_LIMIT} bytes")
    return bytes(data)


# --- building the delta, once per (artifact, base, changed files) ------------------------
class _Payload:
    """The delta's bytes: kept in memory, or spooled to a temp file when large."""

    def __init__(self, data: bytes = b"", spool: IO[bytes] | None = None) -> None:
        self.data, self.spool = data, spool

    def open(self) -> IO[bytes]:
        if self.spool is None:
            return io.BytesIO(self.data)
        self.spool.seek(0)
        return self.spool

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


_deltas: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
_deltas_lock = threading.Lock()
_building: dict[tuple[Any, ...], threading.Lock] = {}


def _delta_bytes(
    new: manifest.Manifest,
    plan: delta.Plan,
    digest: str,
    base_digest: str,
    fmt: str,
    open_stream: Callable[[], IO[bytes]],
    zstd: bool,
) -> _Payload:
    """The delta tar (zstd-compressed when the host has zstd); small ones are kept for the next host."""
    key = (digest, base_digest, tuple(plan.send), tuple(sorted(plan.mtimes.items())), zstd)
    with _deltas_lock:
        building = _building.setdefault(key, threading.Lock())
    with building:  # hosts asking for the same delta at once wait for one build of it
        return _build_delta(key, new, plan, fmt, open_stream, zstd)


def _build_delta(
    key: tuple[Any, ...],
    new: manifest.Manifest,
    plan: delta.Plan,
    fmt: str,
    open_stream: Callable[[], IO[bytes]],
    zstd: bool,
) -> _Payload:
    with _deltas_lock:
        if key in _deltas:
            _deltas.move_to_end(key)
            return _Payload(_deltas[key])
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 -- returned to the caller
    target: Any = spool
    if zstd:
        import zstandard

        target = zstandard.ZstdCompressor(level=3).stream_writer(spool, closefd=False)
    try:
        body = manifest.encode(delta.as_assembled(new, plan))
        delta.write_delta(target, new, plan, body, open_stream, fmt)
        if zstd:
            target.close()
    except (OSError, ValueError, manifest.Unsupported) as exc:
        spool.close()
        raise Fallback(f"cannot build the delta: {exc}") from exc
    size = spool.tell()
    if size > _KEPT_DELTA_BYTES:
        return _Payload(spool=cast(IO[bytes], spool))
    spool.seek(0)
    data = spool.read()
    spool.close()
    with _deltas_lock:
        _deltas[key] = data
        while len(_deltas) > _KEPT_DELTAS:
            old, _ = _deltas.popitem(last=False)
            _building.pop(old, None)
    return _Payload(data)
