"""Hosts: address, user, credential, agent group and pinned host key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ferry.db.inuse import refuse_if_used
from ferry.db.models import (
    Environment,
    EnvironmentHost,
    Host,
    Project,
)
from ferry.domain.agentgroups import DEFAULT_GROUP, validate_group
from ferry.domain.errors import Conflict, HostKeyMismatch, HostKeyUnknown, NotFound

from ._common import HOST_KEY_POLICIES, KEEP, _choice, _int_range, _Keep, _name, _text, _write
from .credentials import _credential


@dataclass(frozen=True)
class HostInfo:
    id: int
    name: str
    address: str
    port: int
    user: str
    credential: str | None
    host_key: str | None
    host_key_policy: str
    agent_group: str
    created_at: datetime


def _host_info(h: Host) -> HostInfo:
    return HostInfo(
        h.id,
        h.name,
        h.address,
        h.port,
        h.user,
        h.credential.name if h.credential else None,
        h.host_key,
        h.host_key_policy,
        h.agent_group,
        h.created_at,
    )


def _host(session: Session, name: str, field: str = "name") -> Host:
    h = session.scalar(select(Host).where(Host.name == name))
    if h is None:
        raise NotFound(f"no host named {name!r}", field=field)
    return h


def create_host(
    session: Session,
    name: str,
    address: str,
    user: str,
    *,
    port: int = 22,
    credential: str | None = None,
    host_key: str | None = None,
    host_key_policy: str = "pinned",
    agent_group: str = DEFAULT_GROUP,
) -> HostInfo:
    h = Host(
        name=_name(name),
        address=_text(address, "address", 255),
        port=_int_range(port, "port", 1, 65535),
        user=_text(user, "user", 100),
        credential=_credential(session, credential, "credential") if credential is not None else None,
        host_key=host_key or None,
        host_key_policy=_choice(host_key_policy, HOST_KEY_POLICIES, "host_key_policy"),
        agent_group=validate_group(agent_group),
    )
    with _write(session, exists=f"a host named {name!r} already exists"):
        session.add(h)
    return _host_info(h)


def get_host(session: Session, name: str) -> HostInfo:
    return _host_info(_host(session, name))


def list_hosts(session: Session) -> list[HostInfo]:
    return [_host_info(h) for h in session.scalars(select(Host).order_by(Host.name))]


def agent_group_of(session: Session, host: str) -> str:
    """The agent group serving ``host``; "default" for a host not (or no longer) registered."""
    group = session.scalar(select(Host.agent_group).where(Host.name == host))
    return group or DEFAULT_GROUP


def update_host(
    session: Session,
    name: str,
    *,
    new_name: str | None = None,
    address: str | None = None,
    port: int | None = None,
    user: str | None = None,
    credential: str | None | _Keep = KEEP,
    host_key: str | None | _Keep = KEEP,
    host_key_policy: str | None = None,
    agent_group: str | None = None,
) -> HostInfo:
    """Change a host; ``credential=None`` / ``host_key=None`` clear them (an admin re-pins a key here)."""
    h = _host(session, name)
    with _write(session, exists=f"a host named {new_name!r} already exists"):
        if new_name is not None:
            h.name = _name(new_name)
        if address is not None:
            h.address = _text(address, "address", 255)
        if port is not None:
            h.port = _int_range(port, "port", 1, 65535)
        if user is not None:
            h.user = _text(user, "user", 100)
        if credential is not KEEP:
            h.credential = _credential(session, credential, "credential") if credential else None
        if host_key is not KEEP:
            h.host_key = host_key or None
        if host_key_policy is not None:
            h.host_key_policy = _choice(host_key_policy, HOST_KEY_POLICIES, "host_key_policy")
        if agent_group is not None:
            h.agent_group = validate_group(agent_group)
    return _host_info(h)


def delete_host(session: Session, name: str) -> None:
    refuse_if_used(session, f"host {name!r}", host=name)
    h = _host(session, name)
    users = session.execute(
        select(Project.name, Environment.name)
        .join(Environment.project)
        .join(EnvironmentHost, EnvironmentHost.environment_id == Environment.id)
        .where(EnvironmentHost.host_id == h.id)
    ).all()
    if users:
        names = ", ".join(sorted(f"{p}/{e}" for p, e in users))
        raise Conflict(f"host {name!r} is in environments {names}; remove it there first", field="name")
    with _write(session, exists="", in_use=f"host {name!r} is in use"):
        session.delete(h)


def record_host_key(session: Session, host: str, key: str) -> HostInfo:
    """Check ``key`` against the host's pinned key, pinning it first if the policy is trust-on-first-use.

    Raises ``HostKeyMismatch`` for a different key and ``HostKeyUnknown`` when nothing is pinned
    and the policy is ``pinned``. Safe against two agents racing on the first connection.
    """
    h = _host(session, host, field="host")
    if h.host_key is None:
        if h.host_key_policy != "tofu":
            raise HostKeyUnknown(host, "no host key pinned and the policy does not trust on first use")
        with _write(session, exists=""):
            session.execute(
                update(Host)
                .where(Host.id == h.id, Host.host_key.is_(None))
                .values(host_key=key)
                .execution_options(synchronize_session=False)
            )
        session.refresh(h)
    if h.host_key != key:
        raise HostKeyMismatch(host, "the host presented a key other than the pinned one")
    return _host_info(h)
