"""Getting an artifact onto a host: reuse the host's cached copy, else transfer and extract it.

Extraction goes into a temporary directory renamed into place, so a half-uploaded
release never looks complete, and a re-run after a crash at any point is safe.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast

from ferry.domain.errors import InvalidInput
from services.agent import delta, delta_upload, manifest
from services.agent.layout import (
    DIGEST_RE,
    EXTRACT_FLAGS,
    FORMATS,
    MARKER,
    READ_CHUNK,
    RELEASE_ID_RE,
    SUFFIX_FORMAT,
    StepResult,
    q,
    script,
    step_result,
    validate_deploy_path,
    validate_digest,
    validate_release_id,
    value,
    values,
)
from services.agent.ssh import CommandResult, HostSession


def _probe(session: HostSession, dp: str, release_id: str, digest: str, timeout: float) -> dict[str, Any]:
    rel = f"releases/{release_id}"
    cached = " ".join(q(f".ferry/artifacts/{digest}{suffix}") for suffix, _ in FORMATS.values())
    result = session.run(
        script(
            f"mkdir -p {q(dp)}",
            f"cd {q(dp)}",
            "mkdir -p releases shared .ferry/artifacts",
            f"rm -f .ferry/artifacts/.partial-{digest}-*",  # left by an upload that crashed
            f'if [ -f {q(rel + "/" + MARKER)} ]; then echo "release=$(cat {q(rel + "/" + MARKER)})";',
            f"elif [ -e {q(rel)} ]; then echo release=incomplete; fi",
            f'for f in {cached}; do if [ -f "$f" ]; then echo "cached=$f"; fi; done',
            "if command -v zstd >/dev/null 2>&1; then echo zstd=yes; fi",
            f"rm -rf {q(delta_upload.stage_dir(release_id))}",  # left by a delta that crashed
            'cur="$(readlink current 2>/dev/null || true)"; echo "current=${cur##*/}"',
            # Releases the host keeps a manifest of, newest first: the bases a delta can build from.
            "for r in $(ls -t releases); do",
            f'  [ -f "releases/$r/{MARKER}" ] && read -r d < "releases/$r/{MARKER}" || continue',
            '  if [ -f ".ferry/manifests/$r.gz" ]; then echo "candidate=$r $d"; fi',
            "done",
        ),
        timeout=timeout,
    )
    if not result.ok:
        raise _StepFailed(result)
    candidates = []
    for row in values(result.output, "candidate"):
        name, _, held = row.partition(" ")
        if name != release_id and RELEASE_ID_RE.match(name) and DIGEST_RE.match(held):
            candidates.append((name, held))
    return {
        "release": value(result.output, "release"),
        "cached": values(result.output, "cached"),
        "zstd": value(result.output, "zstd") == "yes",
        "current": value(result.output, "current") or None,
        "candidates": candidates,
    }


_MANIFESTS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="manifest")


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
        while self.read(READ_CHUNK):
            pass


def host_has_artifact(session: HostSession, deploy_path: str, digest: str, *, timeout: float = 30.0) -> bool:
    """Whether the host's artifact cache already holds this digest."""
    dp = validate_deploy_path(deploy_path)
    validate_digest(digest)
    names = " ".join(q(f"{dp}/.ferry/artifacts/{digest}{suffix}") for suffix, _ in FORMATS.values())
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
    base_release: str | None = None,
    use_delta: bool = True,
    manifest_dir: Path | None = None,
) -> StepResult:
    """Make releases/<release_id> hold the artifact, transferring it only when the host lacks it.

    The host keeps the archive itself under .ferry/artifacts/ rather than treating an older
    release dir as the cache: release dirs change after extraction (shared links, hook output),
    so only the archive is a faithful copy. prune() drops archives no kept release uses.

    Without the archive, a host that keeps a release with a manifest gets a delta instead: only
    the changed files travel, the rest is hard-linked from that release (delta_upload.py), and any
    doubt sends the whole artifact. `base_release` names the preferred base (by default a release
    holding this digest, else `current`, else the newest); `manifest_dir` keeps the agent's
    manifests on disk (beside its artifact cache); `use_delta=False` always sends the archive.
    """
    started = time.monotonic()
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    validate_digest(digest)
    if fmt not in FORMATS:
        raise InvalidInput(f"artifact format must be one of {sorted(FORMATS)}: {fmt!r}", field="format")
    if base_release is not None:
        validate_release_id(base_release)
    detail: dict[str, Any] = {
        "digest": digest, "format": fmt, "transferred": 0, "reused": False, "delta": False, "bytes_sent": 0,
    }  # fmt: skip
    try:
        probe = _probe(session, dp, release_id, digest, timeout)
    except _StepFailed as failed:
        return step_result(failed.result, detail, started)

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
    manifest_job: Future[manifest.Manifest] | None = None
    usable = [c for c in probe["cached"] if not c.endswith(".tar.zst") or probe["zstd"]]
    if usable:
        archive = usable[0]
        detail["reused"] = True
        output.append(f"host already holds {digest}; nothing transferred")
    else:
        base = delta.choose_base(probe["candidates"], digest, base_release, probe["current"])
        if use_delta and base is not None:
            try:
                done = delta_upload.send_delta(
                    session, dp, release_id, digest, fmt, open_stream,
                    base=base, host_has_zstd=probe["zstd"],
                    manifest_dir=manifest_dir, timeout=timeout,
                )  # fmt: skip
            except delta_upload.Fallback as exc:
                detail["delta_fallback"] = str(exc)
                output.append(f"no delta from releases/{base[0]} ({exc}); sending the whole artifact")
            except delta_upload.Refused as exc:
                return StepResult(3, exc.result.output, time.monotonic() - started, detail)
            else:
                detail.update(done.detail)
                return StepResult(0, done.output, time.monotonic() - started, detail)
        if use_delta:
            # Read the manifest while the bytes travel, so this release can be the base of a delta.
            manifest_job = _MANIFESTS.submit(
                manifest.CACHE.of_artifact, digest, fmt, open_stream, manifest_dir
            )
        try:
            archive, partial, sent, note = _transfer(
                session, dp, digest, fmt, probe["zstd"], open_stream, timeout
            )
        except _StepFailed as failed:
            return step_result(failed.result, detail, started)
        except OSError as exc:
            return StepResult(1, f"upload failed: {exc}\n", time.monotonic() - started, detail)
        detail["transferred"] = detail["bytes_sent"] = sent
        detail["decompressed_on_agent"] = note is not None
        output.append(f"transferred {sent} bytes in {time.monotonic() - started:.2f}s")
        if note:
            output.append(note)
    detail["stored_as"] = archive.rsplit("/", 1)[-1]
    if use_delta and manifest_job is None:  # from the agent's cache only: reading the artifact costs
        known = manifest.CACHE.get(digest, manifest_dir)
        manifest_bytes = manifest.encode(known) if known is not None else b""
    else:
        manifest_bytes = _manifest_bytes(manifest_job, output)

    suffix = archive.rsplit("/", 1)[-1][len(digest) :]
    flags = " ".join(FORMATS[SUFFIX_FORMAT.get(suffix, "none")][1])
    rel, tmp = f"releases/{release_id}", f"releases/.tmp-{release_id}"
    stored = delta_upload.manifest_path(release_id)
    incoming = f".ferry/manifests/.partial-{release_id}-{secrets.token_hex(4)}"
    # Extract into a temp dir that is renamed into place: a half-extracted release never looks complete.
    # stdin carries the artifact's manifest (or nothing), kept for later delta uploads.
    result, _ = session.stream_to_command(
        io.BytesIO(manifest_bytes),
        script(
            f"cd {q(dp)}",
            "mkdir -p .ferry/manifests",
            f"cat > {q(incoming)}",
            f"if [ -s {q(incoming)} ]; then mv -f {q(incoming)} {q(stored)};",
            f"else rm -f {q(incoming)} {q(stored)}; fi",  # never keep a manifest of another extraction
            f"mv -f {q(partial)} {q(archive)}" if partial else ":",
            f"rm -rf {q(tmp)} {q(delta_upload.stage_dir(release_id))}",
            f"mkdir {q(tmp)}",
            f"(umask 0 && tar -x {EXTRACT_FLAGS} {flags} -f {q(archive)} -C {q(tmp)})",
            f"rm -rf {q(tmp + '/' + MARKER)}",  # an archive's own entry there is never written through
            f"printf '%s\\n' {digest} > {q(tmp + '/' + MARKER)}",
            f"if [ -e {q(rel)} ]; then",
            f'  if [ "$(readlink current || true)" = {q(rel)} ]; then',
            f"    echo 'refusing to replace the live release {rel}' >&2; exit 3",
            "  fi",
            f"  rm -rf {q(rel)}",
            "fi",
            f"mv -T {q(tmp)} {q(rel)}",
            f"echo extracted into {q(rel)}",
        ),
        timeout=timeout,
    )
    output.append(result.output.rstrip("\n"))
    return StepResult(result.exit_code, "\n".join(output) + "\n", time.monotonic() - started, detail)


def _manifest_bytes(job: Future[manifest.Manifest] | None, output: list[str]) -> bytes:
    """The encoded manifest the background job read, or b"" (the release then cannot be a delta base)."""
    if job is None:
        return b""
    try:
        return manifest.encode(job.result())
    except (manifest.Unsupported, OSError, ValueError) as exc:
        output.append(f"no manifest kept, later uploads of this artifact send it whole: {exc}")
        return b""


def _transfer(
    session: HostSession,
    dp: str,
    digest: str,
    fmt: str,
    host_has_zstd: bool,
    open_stream: Callable[[], IO[bytes]],
    timeout: float,
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
        # An exec channel into `cat` measured 1.5-2.5x faster than SFTP putfo from the same
        # session: paramiko's 32 KiB SFTP writes split into two SSH packets each plus a status
        # reply, all in Python under the GIL (docs/benchmarks.md, --transfer-probe).
        result, sent = session.stream_to_command(reader, f"cat > {q(dp + '/' + partial)}", timeout=timeout)
        if not result.ok:
            raise _StepFailed(result)
        source.drain()  # hash any bytes past the end of the last zstd frame too
    finally:
        stream.close()
    if source.sha.hexdigest() != digest:
        session.run(f"rm -f {q(dp + '/' + partial)}", timeout=60)
        mismatch = f"artifact digest mismatch: expected {digest}, read {source.sha.hexdigest()}\n"
        raise _StepFailed(CommandResult(1, mismatch, 0.0))
    return final, partial, sent, note
