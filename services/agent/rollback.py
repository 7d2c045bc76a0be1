"""Rollback work: put a host that switched back on its previous release — the atomic switch, a
restart and the same health check as a release; a restored release that fails it is reported so.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from ferry.domain.errors import FerryError, InvariantViolation
from ferry.domain.events import tail
from ferry.domain.release import ReleaseState, RollBackHost
from ferry.domain.work import RollbackWork
from ferry.infra.worker import Permanent, Transient
from services.agent import remote
from services.agent.deps import AgentDeps, connect, fenced, host_env, load, project_secrets, record
from services.agent.health import health_check
from services.agent.ssh import HostSession

ROLLBACK_ATTEMPTS = 6
"""Deliveries of one rollback item (5 s apart) before the host is recorded as not rolled back."""


async def after_failure(deps: AgentDeps, session: HostSession, release_id: str, host: str) -> None:
    """A host that failed after switching goes back to its previous release at once."""
    state = await load(deps, release_id)
    h = state.hosts[host]
    if not h.activated or state.plan is None or not state.plan.rollback_on_failure:
        return
    await _rollback(deps, session, state, host)


async def _rollback(deps: AgentDeps, session: HostSession, state: ReleaseState, host: str) -> None:
    assert state.plan is not None
    recipe = state.plan.recipe
    previous = state.hosts[host].previous_release
    outputs = []
    healthy: bool | None = None
    secrets, masker = await project_secrets(deps, state.project)
    if previous:
        r = await asyncio.to_thread(remote.rollback, session, recipe.deploy_path, previous)
        outputs.append(r.output)
        if r.exit_code == 0:
            env = {**host_env(state, host, session.target, recipe, secrets), "FERRY_RELEASE_ID": previous}
            if recipe.restart:
                r2 = await asyncio.to_thread(
                    remote.restart, session, recipe.deploy_path, recipe.restart, env, recipe.hook_timeout
                )
                outputs.append(r2.output)
            healthy = await _health_after_rollback(session, state, env, outputs)
        else:
            healthy = False
    else:
        outputs.append("no previous release on this host; left as is")
    try:
        await record(
            deps,
            state.release_id,
            RollBackHost(
                host=host,
                to_release=previous,
                output_tail=tail(masker.text("\n".join(outputs))),
                healthy=healthy,
            ),
        )
    except InvariantViolation:
        pass


async def _health_after_rollback(
    session: HostSession, state: ReleaseState, env: dict[str, str], outputs: list[str]
) -> bool | None:
    """The same health check as a release, on the restored one (None when none is configured)."""
    assert state.plan is not None
    recipe = state.plan.recipe
    check = recipe.health
    if check.kind == "none":
        return None
    result = await asyncio.to_thread(
        health_check,
        session,
        recipe.deploy_path,
        command=check.target if check.kind == "command" else None,
        url=check.target if check.kind == "http" else None,
        env=env,
        timeout=check.timeout,
        retries=check.retries,
        delay=check.interval,
    )
    outputs.append(result.output)
    outputs.append("health check passed" if result.exit_code == 0 else "health check FAILED")
    return result.exit_code == 0


async def rollback(msg: Msg, deps: AgentDeps) -> None:
    """Rollback work: switch a host that the failed rollout had activated back to its previous release."""
    work = RollbackWork.parse(msg.data)  # malformed: MalformedWork, terminated by the consumer loop
    release_id, host = work.release_id, work.host
    state = await load(deps, release_id)
    if state.plan is None or state.terminal or host not in state.hosts:
        return
    h = state.hosts[host]
    if not h.activated or h.status == "rolled_back":
        return
    if await fenced(deps, state, work):
        return
    try:
        session = await connect(deps, host)
    except FerryError as exc:
        tries = msg.metadata.num_delivered or 1
        if tries < ROLLBACK_ATTEMPTS:
            raise Transient(f"{exc.message} (attempt {tries} of {ROLLBACK_ATTEMPTS})", delay=5) from exc
        # the host stays on the new release: say so, so the release can end (never a quiet "rolled back")
        why = f"could not roll back after {tries} attempts: {exc.message}"
        try:
            await record(
                deps, release_id, RollBackHost(host=host, to_release=None, output_tail=why, healthy=False)
            )
        except InvariantViolation:
            pass
        raise Permanent(why) from exc
    try:
        await _rollback(deps, session, state, host)
    finally:
        await asyncio.to_thread(session.close)
