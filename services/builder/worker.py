"""Build work: fetch the ref, run the build hooks, package one artifact, store it by sha256.

Every step first checks the release's history, so a redelivered work item after a crash
repeats nothing that already happened; a second build of the same commit and recipe
reuses the stored artifact (recipe key -> digest in a JetStream key-value bucket).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypedDict

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from ferry.domain.errors import (
    ConcurrencyError,
    FerryError,
    InvalidInput,
    InvariantViolation,
    RefNotFound,
    RepositoryError,
)
from ferry.domain.events import tail
from ferry.domain.release import (
    Command,
    FailBuild,
    RecordArtifact,
    RecordHook,
    RecordSource,
    ReleaseState,
    StartBuild,
)
from ferry.domain.work import BuildWork, MalformedWork, RefsRequest
from ferry.infra import metrics, subjects
from ferry.infra.bus import Bus
from ferry.infra.commands import execute
from ferry.infra.worker import Permanent, Transient
from services.builder.hooks import run_hooks
from services.builder.mirror import MirrorCache
from services.builder.package import make_archive, recipe_key
from services.builder.refs import validate_ref
from services.builder.sandbox import Sandbox

log = logging.getLogger("ferry.builder")
BUILDS_BUCKET = subjects.BUILDS_BUCKET
FETCH_ATTEMPTS = 4


class RepoAuth(TypedDict, total=False):
    ssh_key: str
    https_token: str


def repo_auth(url: str, secret: str | None) -> RepoAuth:
    """``MirrorCache.sync`` arguments for a repository credential: an https token for https://
    remotes, an SSH key for ssh ones; none for local paths. A credential of the wrong kind is
    refused before it reaches anyone (an SSH key is never sent to an https server)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ("file" if url.startswith("/") else "ssh")
    if secret is None or scheme == "file":
        return {}
    kind = getattr(secret, "kind", None)  # ferry.infra.credentials.Secret
    looks_like_key = "PRIVATE KEY-----" in secret
    if scheme == "https" and kind != "ssh_key" and not looks_like_key:
        return {"https_token": secret}
    if scheme == "ssh" and kind != "password":
        return {"ssh_key": secret}
    wanted = "an https token (kind 'password')" if scheme == "https" else "an SSH key (kind 'ssh_key')"
    raise InvalidInput(f"{scheme} remotes need {wanted} as repo_credential", field="repo_credential")


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:  # noqa: BLE001 - a message without JetStream metadata (tests)
        return 1


@dataclass
class BuilderDeps:
    bus: Bus
    mirrors: MirrorCache
    builds: KeyValue
    workdir: Path
    secret: Callable[[str], str]
    """Looks up a credential's secret by name (an SSH key or an https token, see ``repo_auth``)."""
    name: str = "builder"
    sandbox: Sandbox = field(default_factory=Sandbox)
    """Where build hooks run (bubblewrap as the hook user unless FERRY_HOOK_SANDBOX=off)."""
    variables: Callable[[str], dict[str, str]] = field(default=lambda project: {})
    """Project name -> its secret variables, decrypted (given to hooks, masked in their output)."""


async def open_builds_kv(bus: Bus) -> KeyValue:
    try:
        return await bus.js.key_value(BUILDS_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await bus.js.create_key_value(bucket=BUILDS_BUCKET, history=1, replicas=bus.replicas)


async def load(deps: BuilderDeps, release_id: str) -> ReleaseState:
    return await deps.bus.histories.state(release_id)


async def record(deps: BuilderDeps, release_id: str, command: Command) -> ReleaseState:
    """Append what ``command`` decides; a release that keeps changing is retried later."""
    try:
        return await execute(deps.bus.histories, release_id, command)
    except ConcurrencyError as exc:
        raise Transient(f"release {release_id} kept changing; will retry") from exc


_ENDED: ContextVar[str] = ContextVar("ferry_build_ended", default="")
"""How this build work item ended the build (packaged, reused, failed), for the metrics."""


async def build(msg: Msg, deps: BuilderDeps) -> None:
    """One build work item, timed by how it ended the build (``ferry_build_duration_seconds``)."""
    started, before = time.monotonic(), _ENDED.set("")
    try:
        await _build(msg, deps)
    except Permanent:
        _ENDED.set("failed")
        raise
    finally:
        if ended := _ENDED.get():
            metrics.BUILD_SECONDS.labels(ended).observe(time.monotonic() - started)
        _ENDED.reset(before)


async def _build(msg: Msg, deps: BuilderDeps) -> None:
    item = BuildWork.parse(msg.data)  # malformed: MalformedWork, terminated by the consumer loop
    release_id = item.release_id
    state = await load(deps, release_id)
    if state.plan is None or state.terminal or state.artifact is not None:
        return  # nothing to do: unknown, finished, or already built
    why = await deps.bus.locks.refusal(state.project, state.environment, release_id, item.lock)
    if why is not None:
        log.warning("refused fenced work", extra={"release_id": release_id, "why": why})
        return
    plan = state.plan
    if state.status == "queued":
        try:
            state = await record(deps, release_id, StartBuild(builder=deps.name))
        except InvariantViolation:
            return
    if state.status != "building":
        return
    recipe = plan.recipe
    if state.commit is None:
        started = time.monotonic()
        try:
            ref = validate_ref(state.ref)
            auth = repo_auth(
                recipe.repo_url, deps.secret(recipe.repo_credential) if recipe.repo_credential else None
            )
            await asyncio.to_thread(partial(deps.mirrors.sync, recipe.repo_url, **auth))
            commit = await asyncio.to_thread(deps.mirrors.resolve, recipe.repo_url, ref)
        except RepositoryError as exc:
            # A repository that does not answer may come back: retry a few times, then fail visibly.
            if not isinstance(exc, RefNotFound) and _deliveries(msg) < FETCH_ATTEMPTS:
                raise Transient(exc.message, delay=2.0 * _deliveries(msg)) from exc
            await record(deps, release_id, FailBuild(stage="fetch", reason=exc.message))
            raise Permanent(exc.message) from exc
        except FerryError as exc:
            await record(deps, release_id, FailBuild(stage="fetch", reason=exc.message))
            raise Permanent(exc.message) from exc
        state = await record(
            deps, release_id, RecordSource(commit=commit, duration=time.monotonic() - started)
        )
    assert state.commit is not None
    commit = state.commit

    key = recipe_key(commit, list(recipe.build_hooks), list(recipe.excludes), recipe.artifact_format)
    # hooks that see secret variables may build something else when they change: never reused
    try:
        secrets = await asyncio.to_thread(deps.variables, state.project) if recipe.build_hooks else {}
    except FerryError as exc:  # e.g. a variable no key opens: the build fails saying so
        await record(deps, release_id, FailBuild(stage="hooks", reason=exc.message))
        raise Permanent(exc.message) from exc
    cached = None if secrets else await _cached(deps, key)
    if cached is not None:
        digest, size = cached
        await record(
            deps,
            release_id,
            RecordArtifact(digest=digest, size=size, format=recipe.artifact_format, reused=True),
        )
        _ENDED.set("reused")
        return

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"build-{release_id}-", dir=deps.workdir))
    try:
        src = work / "src"
        await asyncio.to_thread(deps.mirrors.export, recipe.repo_url, commit, src)
        log_path = work / "build.log"
        env = {
            "FERRY_RELEASE_ID": release_id,
            "FERRY_COMMIT": commit,
            "FERRY_REF": state.ref,
            "FERRY_PROJECT": state.project,
            "FERRY_ENVIRONMENT": state.environment,
        }
        try:
            results = await asyncio.to_thread(
                run_hooks,
                list(recipe.build_hooks),
                cwd=src,
                env=env,
                timeout=recipe.hook_timeout,
                log_path=log_path,
                sandbox=deps.sandbox,
                network=recipe.hook_network,
                secrets=secrets,
            )
        except FerryError as exc:  # e.g. no sandbox on this machine: nothing ran, say why
            await record(deps, release_id, FailBuild(stage="hooks", reason=exc.message))
            raise Permanent(exc.message) from exc
        log_digest = None
        if log_path.exists():
            log_digest = (await deps.bus.artifacts.put_file(log_path)).digest
        for r in results:
            await record(
                deps,
                release_id,
                RecordHook(
                    index=r.index,
                    command=r.command,
                    exit_code=r.exit_code,
                    duration=r.duration,
                    output_tail=tail(r.output_tail),
                ),
            )
        failed = next((r for r in results if r.exit_code != 0), None)
        if failed is not None:
            reason = f"build hook #{failed.index + 1} `{failed.command}` exited with {failed.exit_code}"
            await record(
                deps,
                release_id,
                FailBuild(
                    stage="hooks", reason=reason, output_tail=tail(failed.output_tail), log_digest=log_digest
                ),
            )
            raise Permanent(reason)
        try:
            archive = await asyncio.to_thread(
                make_archive, src, work, excludes=list(recipe.excludes), fmt=recipe.artifact_format
            )
        except FerryError as exc:
            await record(deps, release_id, FailBuild(stage="package", reason=exc.message))
            raise Permanent(exc.message) from exc
        stored = await deps.bus.artifacts.put_file(archive.path)
        if not secrets:
            await deps.builds.put(key, json.dumps({"digest": stored.digest, "size": stored.size}).encode())
        await record(
            deps,
            release_id,
            RecordArtifact(
                digest=stored.digest,
                size=stored.size,
                format=recipe.artifact_format,
                log_digest=log_digest,
                duration=time.monotonic() - started,
            ),
        )
        log.info(
            "artifact packaged",
            extra={
                "release_id": release_id,
                "digest": stored.digest,
                "size": stored.size,
                "files": archive.files,
            },
        )
        _ENDED.set("packaged")
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _cached(deps: BuilderDeps, key: str) -> tuple[str, int] | None:
    try:
        entry = await deps.builds.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    data = json.loads(entry.value)
    digest, size = str(data["digest"]), int(data["size"])
    if await deps.bus.artifacts.exists(digest) is None:
        return None
    return digest, size


async def list_refs(msg: Msg, deps: BuilderDeps) -> None:
    """Request-reply: ``{"repo_url", "credential"}`` -> branches and tags from the mirror."""
    try:
        req = RefsRequest.parse(msg.data)
        url, cred = req.repo_url, req.credential
        auth = repo_auth(url, deps.secret(cred) if cred else None)
        await asyncio.to_thread(partial(deps.mirrors.sync, url, **auth))
        refs = await asyncio.to_thread(deps.mirrors.list_refs, url)
        reply: dict[str, object] = {"ok": True, **refs}
    except MalformedWork as exc:
        reply = {"ok": False, "code": "INVALID_INPUT", "error": exc.message}
    except FerryError as exc:
        reply = {"ok": False, "code": exc.code, "error": exc.message}
    await msg.respond(json.dumps(reply).encode())


HANDLERS = {
    subjects.BUILD_WORK: build,
}
