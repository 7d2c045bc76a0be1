"""What every agent handler shares: its dependencies, reading and recording a release's state,
the local artifact cache, the SSH connection, and the environment lock's fence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ferry.domain.errors import ConcurrencyError, HostError, HostUnreachable
from ferry.domain.events import Recipe
from ferry.domain.masking import Masker
from ferry.domain.release import Command, ReleaseState
from ferry.domain.work import HostWork
from ferry.infra.bus import Bus
from ferry.infra.commands import execute
from ferry.infra.worker import Transient
from services.agent import manifest
from services.agent.ssh import HostSession, SSHTarget

log = logging.getLogger("ferry.agent")
CONNECT_ATTEMPTS = 3


@dataclass
class AgentDeps:
    bus: Bus
    target: Callable[[str], SSHTarget]
    """Host name -> connection details (decrypted credential, pinned key)."""
    record_host_key: Callable[[str, str], None]
    cache_dir: Path
    name: str = "agent"
    variables: Callable[[str], dict[str, str]] = field(default=lambda project: {})
    """Project name -> its secret variables, decrypted: in host commands' environment, masked in output."""
    _downloads: dict[str, asyncio.Lock] = field(default_factory=dict)
    _manifests: dict[str, asyncio.Task[object]] = field(default_factory=dict)


async def load(deps: AgentDeps, release_id: str) -> ReleaseState:
    return await deps.bus.histories.state(release_id)


async def record(deps: AgentDeps, release_id: str, command: Command) -> ReleaseState:
    """Append what ``command`` decides; a release that keeps changing is retried later."""
    try:
        return await execute(deps.bus.histories, release_id, command)
    except ConcurrencyError as exc:
        raise Transient(f"release {release_id} kept changing; will retry") from exc


async def artifact_path(deps: AgentDeps, digest: str, fmt: str) -> Path:
    """The artifact in this agent's local cache, downloaded from the object store once, with its
    file manifest read once (delta uploads compare it with what each host holds)."""
    path = deps.cache_dir / digest
    lock = deps._downloads.setdefault(digest, asyncio.Lock())
    async with lock:
        if not path.exists():
            await deps.bus.artifacts.get_file(digest, path)
        if digest not in deps._manifests:
            # in the background: a first release to a host needs no manifest before its bytes
            # travel, and a delta upload waits for this one read instead of starting its own
            task = asyncio.create_task(
                asyncio.to_thread(
                    manifest.CACHE.of_artifact, digest, fmt, lambda: open(path, "rb"), deps.cache_dir
                )
            )
            task.add_done_callback(_manifest_done)
            deps._manifests[digest] = task
    return path


async def project_secrets(deps: AgentDeps, project: str) -> tuple[dict[str, str], Masker]:
    """The project's secret variables and the masker for their values (read once per host's work)."""
    values = await asyncio.to_thread(deps.variables, project)
    return values, Masker(values.values())


def host_env(
    state: ReleaseState,
    host: str,
    target: SSHTarget,
    recipe: Recipe,
    secrets: dict[str, str] | None = None,
) -> dict[str, str]:
    """What host commands see: the project's secret variables, then ferry's own names (which win)."""
    return {
        **(secrets or {}),
        "FERRY_PROJECT": state.project,
        "FERRY_ENVIRONMENT": state.environment,
        "FERRY_COMMIT": state.commit or "",
        "FERRY_REF": state.ref,
        "FERRY_HOST_NAME": host,
        "FERRY_HOST_ADDRESS": target.address,
    }


async def connect(deps: AgentDeps, host: str) -> HostSession:
    target = deps.target(host)
    last: HostError | None = None
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            session = await asyncio.to_thread(HostSession.connect, target)
        except HostUnreachable as exc:
            last = exc
            await asyncio.sleep(0.5 * (attempt + 1))
            continue
        if session.trusted_on_first_use and session.observed_host_key:
            await asyncio.to_thread(deps.record_host_key, host, session.observed_host_key)
        return session
    assert last is not None
    raise last


async def fenced(deps: AgentDeps, state: ReleaseState, work: HostWork) -> bool:
    """Work scheduled under an older environment lock token is dropped, never run."""
    why = await deps.bus.locks.refusal(state.project, state.environment, state.release_id, work.lock)
    if why is not None:
        log.warning("refused fenced work", extra={"release_id": state.release_id, "why": why})
    return why is not None


def _manifest_done(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "could not read the artifact's manifest; uploads send it whole",
            extra={"why": str(task.exception())},
        )
