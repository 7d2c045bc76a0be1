"""Environments: a project's hosts with their rollout plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.inuse import refuse_if_used
from ferry.db.models import (
    Environment,
    EnvironmentHost,
    Host,
)
from ferry.domain.errors import InvalidInput, NotFound
from ferry.domain.events import Plan

from ._common import ON_BUSY, STRATEGIES, UNSET, Unset, _choice, _int_range, _name, _seconds, _write
from .projects import _project, _project_info


@dataclass(frozen=True)
class EnvironmentInfo:
    id: int
    project: str
    name: str
    hosts: tuple[str, ...]
    concurrency: int
    max_failures: int
    require_approval: bool
    rollback_on_failure: bool
    strategy: str = "all"
    batch_size: int | None = None
    canary_size: int = 1
    canary_pause: float | None = None
    on_busy: str = "queue"
    allow_self_approval: bool = False


def _environment_info(e: Environment) -> EnvironmentInfo:
    return EnvironmentInfo(
        e.id,
        e.project.name,
        e.name,
        tuple(m.host.name for m in e.members),
        e.concurrency,
        e.max_failures,
        e.require_approval,
        e.rollback_on_failure,
        e.strategy,
        e.batch_size,
        e.canary_size,
        e.canary_pause,
        e.on_busy,
        e.allow_self_approval,
    )


def _environment(session: Session, project: str, name: str, field: str = "name") -> Environment:
    p = _project(session, project, field="project")
    e = session.scalar(select(Environment).where(Environment.project_id == p.id, Environment.name == name))
    if e is None:
        raise NotFound(f"project {project!r} has no environment named {name!r}", field=field)
    return e


def _members(session: Session, hosts: Sequence[str]) -> list[EnvironmentHost]:
    if isinstance(hosts, str):
        raise InvalidInput("hosts must be a list of host names", field="hosts")
    if len(set(hosts)) != len(hosts):
        raise InvalidInput("hosts must be unique", field="hosts")
    found = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(list(hosts))))}
    missing = [h for h in hosts if h not in found]
    if missing:
        raise NotFound(f"no host named {missing[0]!r}", field="hosts")
    return [EnvironmentHost(host=found[h], position=i) for i, h in enumerate(hosts)]


def create_environment(
    session: Session,
    project: str,
    name: str,
    *,
    hosts: Sequence[str] = (),
    concurrency: int = 1,
    max_failures: int = 0,
    require_approval: bool = False,
    rollback_on_failure: bool = True,
    strategy: str = "all",
    batch_size: int | None = None,
    canary_size: int = 1,
    canary_pause: float | None = None,
    on_busy: str = "queue",
    allow_self_approval: bool = False,
) -> EnvironmentInfo:
    """An environment of ``project`` whose hosts are released in the given order."""
    p = _project(session, project, field="project")
    members = _members(session, hosts)
    e = Environment(
        name=_name(name),
        concurrency=_int_range(concurrency, "concurrency", 1),
        max_failures=_int_range(max_failures, "max_failures", 0),
        require_approval=bool(require_approval),
        rollback_on_failure=bool(rollback_on_failure),
        strategy=_choice(strategy, STRATEGIES, "strategy"),
        batch_size=None if batch_size is None else _int_range(batch_size, "batch_size", 1),
        canary_size=_int_range(canary_size, "canary_size", 1),
        canary_pause=_seconds(canary_pause, "canary_pause"),
        on_busy=_choice(on_busy, ON_BUSY, "on_busy"),
        allow_self_approval=bool(allow_self_approval),
        members=members,
    )
    with _write(session, exists=f"project {project!r} already has an environment named {name!r}"):
        p.environments.append(e)
    return _environment_info(e)


def get_environment(session: Session, project: str, name: str) -> EnvironmentInfo:
    return _environment_info(_environment(session, project, name))


def list_environments(session: Session, project: str) -> list[EnvironmentInfo]:
    p = _project(session, project, field="project")
    rows = session.scalars(
        select(Environment).where(Environment.project_id == p.id).order_by(Environment.name)
    )
    return [_environment_info(e) for e in rows]


def update_environment(
    session: Session,
    project: str,
    name: str,
    *,
    new_name: str | None = None,
    hosts: Sequence[str] | None = None,
    concurrency: int | None = None,
    max_failures: int | None = None,
    require_approval: bool | None = None,
    rollback_on_failure: bool | None = None,
    strategy: str | None = None,
    batch_size: int | None | Unset = UNSET,
    canary_size: int | None = None,
    canary_pause: float | None | Unset = UNSET,
    on_busy: str | None = None,
    allow_self_approval: bool | None = None,
) -> EnvironmentInfo:
    """Change an environment; ``hosts`` replaces the whole ordered host list. ``batch_size`` and
    ``canary_pause`` may be set to None (batches of ``concurrency``; wait for a resume)."""
    e = _environment(session, project, name)
    with _write(session, exists=f"project {project!r} already has an environment named {new_name!r}"):
        if new_name is not None:
            e.name = _name(new_name)
        if concurrency is not None:
            e.concurrency = _int_range(concurrency, "concurrency", 1)
        if max_failures is not None:
            e.max_failures = _int_range(max_failures, "max_failures", 0)
        if require_approval is not None:
            e.require_approval = bool(require_approval)
        if rollback_on_failure is not None:
            e.rollback_on_failure = bool(rollback_on_failure)
        if strategy is not None:
            e.strategy = _choice(strategy, STRATEGIES, "strategy")
        if not isinstance(batch_size, Unset):
            e.batch_size = None if batch_size is None else _int_range(batch_size, "batch_size", 1)
        if canary_size is not None:
            e.canary_size = _int_range(canary_size, "canary_size", 1)
        if not isinstance(canary_pause, Unset):
            e.canary_pause = _seconds(canary_pause, "canary_pause")
        if on_busy is not None:
            e.on_busy = _choice(on_busy, ON_BUSY, "on_busy")
        if allow_self_approval is not None:
            e.allow_self_approval = bool(allow_self_approval)
        if hosts is not None:
            members = _members(session, hosts)
            e.members.clear()
            session.flush()  # delete the old rows before inserting the new order
            e.members.extend(members)
    session.refresh(e)
    return _environment_info(e)


def delete_environment(session: Session, project: str, name: str) -> None:
    refuse_if_used(session, f"environment {project}/{name}", project=project, environment=name)
    e = _environment(session, project, name)
    with _write(session, exists="", in_use=f"environment {name!r} is in use"):
        session.delete(e)


def environment_plan(session: Session, project: str, environment: str) -> Plan:
    """The release plan for ``project`` to ``environment`` from the current configuration."""
    p = _project_info(_project(session, project, field="project"))
    e = _environment_info(_environment(session, project, environment, field="environment"))
    return Plan(
        recipe=p.recipe(),
        hosts=e.hosts,
        concurrency=e.concurrency,
        max_failures=e.max_failures,
        require_approval=e.require_approval,
        allow_self_approval=e.allow_self_approval,
        rollback_on_failure=e.rollback_on_failure,
        strategy=e.strategy,  # type: ignore[arg-type]  # checked on write (STRATEGIES)
        batch_size=e.batch_size,
        canary_size=e.canary_size,
        canary_pause=e.canary_pause,
    )
