"""Deploy work: run one host's steps over one SSH connection, one event pair per step.

Before every step the release's state is caught up (``bus.histories``: only what was appended
since the last read): a step already finished is never repeated, a terminal release stops the
host, and a step that was started but never finished (a crash) is run again (every step is
idempotent on the host). A host's events go to its own subject, so hosts never wait for each
other's appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nats.aio.msg import Msg

from ferry.domain.errors import (
    FerryError,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
    InvariantViolation,
)
from ferry.domain.events import HOST_STEPS, TAIL_LIMIT, tail
from ferry.domain.release import FailHost, FinishHostStep, ReleaseState, StartHostStep
from ferry.domain.rollout import failures
from ferry.domain.work import DeployWork
from ferry.infra import metrics, tracing
from ferry.infra.worker import Permanent, Transient
from services.agent import remote, rollback
from services.agent.deps import (
    AgentDeps,
    artifact_path,
    connect,
    fenced,
    host_env,
    load,
    project_secrets,
    record,
)
from services.agent.health import health_check
from services.agent.ssh import HostSession

log = logging.getLogger("ferry.agent")


INSTANT = {"skipped": True, "instant": True}


def run_step(
    session: HostSession,
    step: str,
    state: ReleaseState,
    host: str,
    open_artifact: Callable[[], IO[bytes]],
    manifest_dir: Path | None = None,
    secrets: dict[str, str] | None = None,
) -> remote.StepResult:
    """Carry out one step on the host (blocking: called from a worker thread).

    A rollback (``plan.restores``) to a directory the host still holds with the same artifact is
    instant: nothing is sent or extracted, link and hooks are skipped, and ``current`` switches
    to that directory, then restart and health check as usual.
    """
    assert state.plan is not None and state.artifact is not None
    recipe = state.plan.recipe
    rid = state.release_id
    path = recipe.deploy_path
    env = host_env(state, host, session.target, recipe, secrets)
    timeout = recipe.hook_timeout
    kept = state.hosts[host].release_dir  # set by an instant upload
    target = kept or rid
    live_env = {**env, "FERRY_RELEASE_ID": target}
    match step:
        case "upload":
            restores = state.plan.restores
            if restores and remote.holds_release(session, path, restores, state.artifact.digest):
                text = f"instant: releases/{restores} holds this artifact; nothing sent, nothing extracted"
                return remote.StepResult(0, text, 0.0, {**INSTANT, "release_dir": restores, "transferred": 0})
            remote.prepare(session, path)
            return remote.upload_artifact(
                session,
                path,
                rid,
                state.artifact.digest,
                state.artifact.format,
                open_artifact,
                manifest_dir=manifest_dir,
            )
        case "link" | "pre_release" if kept:
            return remote.StepResult(0, f"instant: releases/{kept} is used as it is", 0.0, dict(INSTANT))
        case "link":
            return remote.link_shared(session, path, rid, list(recipe.shared_files), list(recipe.shared_dirs))
        case "pre_release":
            return remote.run_hook(session, path, rid, recipe.pre_release, env, timeout)
        case "activate":
            return remote.activate(session, path, target)
        case "restart":
            return remote.restart(session, path, recipe.restart, live_env, timeout)
        case "health":
            check = recipe.health
            if check.kind == "none":
                return remote.StepResult(0, "no health check configured", 0.0, {"skipped": True})
            return health_check(
                session,
                path,
                command=check.target if check.kind == "command" else None,
                url=check.target if check.kind == "http" else None,
                env=live_env,
                timeout=check.timeout,
                retries=check.retries,
                delay=check.interval,
            )
        case "post_release" if kept:
            return remote.StepResult(
                0, f"instant: releases/{kept} restored; no hook, nothing pruned", 0.0, dict(INSTANT)
            )
        case "post_release":
            result = remote.run_hook(session, path, rid, recipe.post_release, env, timeout)
            if result.exit_code == 0:
                previous = state.hosts[host].previous_release
                protect = {rid} | ({previous} if previous else set())
                pruned = remote.prune(session, path, recipe.keep_releases, protect)
                return remote.StepResult(
                    0,
                    (result.output + "\n" + pruned.output).strip(),
                    result.duration + pruned.duration,
                    {**result.detail, **pruned.detail},
                )
            return result
    raise InvariantViolation(f"unknown step {step}")


async def deploy(msg: Msg, deps: AgentDeps) -> None:
    work = DeployWork.parse(msg.data)  # malformed: MalformedWork, terminated by the consumer loop
    release_id, host = work.release_id, work.host
    state = await load(deps, release_id)
    if not _should_work(state, host):
        return
    if await fenced(deps, state, work):
        return
    if state.artifact is not None:  # fetch the artifact while the SSH handshake runs
        prefetch = asyncio.create_task(artifact_path(deps, state.artifact.digest, state.artifact.format))
        prefetch.add_done_callback(lambda t: t.cancelled() or t.exception())  # _run_steps sees errors
    try:
        session = await connect(deps, host)
    except (HostKeyMismatch, HostKeyUnknown) as exc:
        await _fail(deps, release_id, host, "upload", exc.message, exc.code)
        raise Permanent(exc.message) from exc
    except FerryError as exc:
        # unreachable after retries, or the host's configuration is gone (deleted host or
        # credential): the host fails with the reason instead of the work coming back forever
        await _fail(deps, release_id, host, state.hosts[host].next_step() or "upload", exc.message, exc.code)
        raise Permanent(exc.message) from exc
    try:
        await _run_steps(deps, session, release_id, host)
    finally:
        await asyncio.to_thread(session.close)


def _should_work(state: ReleaseState, host: str) -> bool:
    if state.plan is None or state.terminal or state.artifact is None or host not in state.hosts:
        return False
    h = state.hosts[host]
    if h.status not in ("waiting", "running"):
        return False
    if h.status == "waiting" and state.status in ("paused", "cancelling"):
        return False
    if h.status == "waiting" and len(failures(state)) > state.plan.max_failures:
        return False  # the rollout stopped: don't start new hosts
    return True


async def _run_steps(deps: AgentDeps, session: HostSession, release_id: str, host: str) -> None:
    artifact: Path | None = None

    def open_artifact() -> IO[bytes]:
        assert artifact is not None
        return open(artifact, "rb")

    refused = 0
    secrets: dict[str, str] | None = None
    # each step runs once, after at most one refusal on a stale read: a bounded walk of the steps
    for _ in range(2 * len(HOST_STEPS) + 2):
        state = await load(deps, release_id)
        if not _should_work(state, host):
            return
        step = state.hosts[host].next_step()
        if step is None:
            return
        if secrets is None:
            try:
                secrets, masker = await project_secrets(deps, state.project)
            except FerryError as exc:  # e.g. a variable no key opens: the host fails saying so
                await _fail(deps, release_id, host, step, exc.message, exc.code)
                return
        if state.status == "cancelling":
            # stop here; a host that already switched is rolled back by the cancel's rollback work
            await _fail(
                deps, release_id, host, step, f"cancelled by {state.cancel_requested_by}", "CANCELLED"
            )
            return
        if step == "upload" and state.artifact is not None:
            artifact = await artifact_path(deps, state.artifact.digest, state.artifact.format)
        try:
            state = await record(deps, release_id, StartHostStep(host=host, step=step, agent=deps.name))
        except InvariantViolation:
            refused += 1
            if refused > 1:
                return  # refused again on a fresh read: nothing for this host to do
            continue  # decided on a stale read (a cancel or the end came first): look again
        refused = 0
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(
                run_step, session, step, state, host, open_artifact, deps.cache_dir, secrets
            )
        except HostUnreachable as exc:
            # the connection dropped mid-step: record it, the host failed
            result = remote.StepResult(255, exc.message, time.monotonic() - started, {})
        except FerryError as exc:
            result = remote.StepResult(2, exc.message, time.monotonic() - started, {})
        result = remote.masked(result, masker)  # before anything is recorded
        detail = _plain(result.detail)
        size, ok = (state.artifact.size if state.artifact is not None else 0), result.exit_code == 0
        metrics.host_step(step, result.duration, ok, result.detail, size)
        tracing.finished(
            f"host step {step}", result.duration, error=not ok, step=step, exit_code=result.exit_code
        )
        if len(result.output) > TAIL_LIMIT:
            # the event keeps a tail; the whole output goes to the object store, by digest
            stored = await deps.bus.artifacts.put_bytes(result.output.encode())
            detail["log_digest"] = stored.digest
        try:
            await record(
                deps,
                release_id,
                FinishHostStep(
                    host=host,
                    step=step,
                    exit_code=result.exit_code,
                    duration=result.duration,
                    output_tail=tail(result.output),
                    detail=detail,
                ),
            )
        except InvariantViolation as exc:
            log.warning(
                "step result not recorded", extra={"release_id": release_id, "host": host, "why": exc.message}
            )
            return
        if result.exit_code != 0:
            reason = f"{step} exited with {result.exit_code}: {_last_line(result.output)}"
            await _fail(deps, release_id, host, step, reason)
            await rollback.after_failure(deps, session, release_id, host)
            return
    raise Transient(f"host {host} of {release_id} did not settle; its work comes back")


async def _fail(
    deps: AgentDeps, release_id: str, host: str, step: str, reason: str, code: str = "STEP_FAILED"
) -> None:
    try:
        await record(deps, release_id, FailHost(host=host, step=step, reason=reason, code=code))
    except InvariantViolation:
        pass


def _plain(detail: dict[str, Any]) -> dict[str, object]:
    return {k: v for k, v in detail.items() if isinstance(v, str | int | float | bool | type(None) | list)}


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


HANDLERS = {
    "deploy": deploy,
    "rollback": rollback.rollback,
}
"""Host work by action, the last token of ``ferry.work.host.<group>.<action>``."""
