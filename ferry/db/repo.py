"""Configuration CRUD and release queries over a ``Session``.

Functions flush inside a SAVEPOINT and leave the commit to the caller; a failed write
rolls back only itself. Lookups by name raise ``NotFound(field=...)``; the database's
integrity errors become ``Conflict(field=...)`` here, once. Results are plain frozen
views: credential secrets leave the database only through ``load_secret``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ferry import webhooks
from ferry.agentgroups import DEFAULT_GROUP, validate_group
from ferry.db.inuse import refuse_if_used
from ferry.db.models import (
    Base,
    Credential,
    Environment,
    EnvironmentHost,
    Host,
    HostStep,
    Project,
    ProjectionPosition,
    Release,
    ReleaseHost,
    Webhook,
    WebhookDelivery,
)
from ferry.errors import Conflict, HostKeyMismatch, HostKeyUnknown, InvalidInput, NotFound
from ferry.events import HOST_STEPS, Plan, Recipe, utcnow
from ferry.secrets import SecretBox


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""Default of optional update arguments whose ``None`` means "clear it"."""

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CREDENTIAL_KINDS = ("ssh_key", "password")
HOST_KEY_POLICIES = ("pinned", "tofu")
_RECIPE_OWN_FIELDS = frozenset({"repo_url", "repo_credential"})


# --- views ---------------------------------------------------------------------
@dataclass(frozen=True)
class CredentialInfo:
    id: int
    name: str
    kind: str
    summary: str
    created_at: datetime


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


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    repo_url: str
    repo_credential: str | None
    config: dict[str, Any]
    created_at: datetime

    def recipe(self) -> Recipe:
        """The project's build and install recipe, as releases snapshot it."""
        return Recipe(repo_url=self.repo_url, repo_credential=self.repo_credential, **self.config)


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


@dataclass(frozen=True)
class HostStepView:
    step: str
    status: str
    exit_code: int | None
    started_at: datetime
    duration: float | None
    output_tail: str


@dataclass(frozen=True)
class ReleaseHostView:
    host: str
    status: str
    failure: str | None
    activated: bool
    previous_release: str | None
    steps: tuple[HostStepView, ...]


@dataclass(frozen=True)
class ReleaseSummary:
    id: str
    project: str
    environment: str
    ref: str
    commit: str | None
    status: str
    requested_by: str
    artifact_digest: str | None
    artifact_size: int | None
    artifact_reused: bool | None
    reason: str | None
    requested_at: datetime
    finished_at: datetime | None
    last_version: int
    last_seq: int


@dataclass(frozen=True)
class ReleaseView(ReleaseSummary):
    hosts: tuple[ReleaseHostView, ...]


def _credential_info(c: Credential) -> CredentialInfo:
    return CredentialInfo(c.id, c.name, c.kind, c.summary, c.created_at)


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


def _project_info(p: Project) -> ProjectInfo:
    return ProjectInfo(
        p.id,
        p.name,
        p.repo_url,
        p.repo_credential.name if p.repo_credential else None,
        dict(p.config),
        p.created_at,
    )


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


def _summary_fields(r: Release) -> dict[str, Any]:
    return {
        "id": r.id,
        "project": r.project,
        "environment": r.environment,
        "ref": r.ref,
        "commit": r.commit,
        "status": r.status,
        "requested_by": r.requested_by,
        "artifact_digest": r.artifact_digest,
        "artifact_size": r.artifact_size,
        "artifact_reused": r.artifact_reused,
        "reason": r.reason,
        "requested_at": r.requested_at,
        "finished_at": r.finished_at,
        "last_version": r.last_version,
        "last_seq": r.last_seq,
    }


# --- errors and validation ------------------------------------------------------
def _unique_columns() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name and hasattr(constraint, "columns"):
                out[str(constraint.name)] = tuple(c.name for c in constraint.columns)
    return out


_CONSTRAINT_COLUMNS = _unique_columns()


def _violated_field(exc: IntegrityError) -> str | None:
    """The column a unique violation is about (the last of a composite key), else None."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)  # psycopg
    if diag is not None and getattr(diag, "constraint_name", None):
        columns = _CONSTRAINT_COLUMNS.get(diag.constraint_name)
        if columns and type(orig).__name__ == "UniqueViolation":
            return columns[-1]
        return None
    match = re.search(r"UNIQUE constraint failed: (.+)$", str(orig))  # sqlite3
    if match:
        return match.group(1).split(",")[-1].strip().rsplit(".", 1)[-1]
    return None


@contextmanager
def _write(session: Session, *, exists: str, in_use: str = "", field: str = "name") -> Iterator[None]:
    """A savepoint around one write; integrity errors become ``Conflict``.

    ``exists`` is the message for a unique violation, ``in_use`` for a violated foreign key.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as exc:
        column = _violated_field(exc)
        if column is not None:
            raise Conflict(exists, field=column) from exc
        raise Conflict(in_use or exists, field=field) from exc


def _name(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInput(
            f"{field} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def _choice(value: str, choices: Sequence[str], field: str) -> str:
    if value not in choices:
        raise InvalidInput(f"{field} must be one of {', '.join(choices)}", field=field)
    return value


def _int_range(value: int, field: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
        bound = f"between {low} and {high}" if high else f"at least {low}"
        raise InvalidInput(f"{field} must be an integer {bound}", field=field)
    return value


STRATEGIES = ("all", "rolling", "canary")
ON_BUSY = ("queue", "reject")
"""What a request does while another release holds the environment: wait its turn, or 409."""


class Unset:
    """The type of ``UNSET``: an argument not given (where None is a value)."""


UNSET = Unset()


def _seconds(value: float | None, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 7 * 24 * 3600:
        raise InvalidInput(f"{field} must be a number of seconds between 0 and 604800, or null", field=field)
    return float(value)


def _text(value: str, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(f"{field} must be non-empty text of at most {max_len} characters", field=field)
    return value


# --- credentials ----------------------------------------------------------------
def ssh_key_summary(private_key: str) -> str:
    """``<type> SHA256:<fingerprint>`` of a private key's public half (as ``ssh-keygen -l`` prints)."""
    data = private_key.encode()
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except TypeError as exc:  # encrypted key: ferry does not keep key passphrases
        raise InvalidInput("the private key must not be passphrase-protected", field="secret") from exc
    except (ValueError, AttributeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput("secret is not a readable SSH private key", field="secret") from exc
    kind, blob = public.split(b" ")[:2]
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).rstrip(b"=")
    return f"{kind.decode()} SHA256:{digest.decode()}"


def _credential(session: Session, name: str, field: str = "name") -> Credential:
    c = session.scalar(select(Credential).where(Credential.name == name))
    if c is None:
        raise NotFound(f"no credential named {name!r}", field=field)
    return c


def _summary_for(kind: str, secret: str) -> str:
    if kind == "ssh_key":
        return ssh_key_summary(secret)
    if not secret:
        raise InvalidInput("password must not be empty", field="secret")
    return "password"


def create_credential(session: Session, box: SecretBox, name: str, kind: str, secret: str) -> CredentialInfo:
    """Store a credential encrypted; its summary is the key's fingerprint, never the secret."""
    _name(name)
    _choice(kind, CREDENTIAL_KINDS, "kind")
    summary = _summary_for(kind, secret)
    c = Credential(name=name, kind=kind, secret=box.encrypt(secret), summary=summary)
    with _write(session, exists=f"a credential named {name!r} already exists"):
        session.add(c)
    return _credential_info(c)


def get_credential(session: Session, name: str) -> CredentialInfo:
    return _credential_info(_credential(session, name))


def list_credentials(session: Session) -> list[CredentialInfo]:
    return [_credential_info(c) for c in session.scalars(select(Credential).order_by(Credential.name))]


def update_credential(
    session: Session,
    box: SecretBox,
    name: str,
    *,
    new_name: str | None = None,
    secret: str | None = None,
) -> CredentialInfo:
    """Rename a credential and/or replace its secret (same kind)."""
    c = _credential(session, name)
    with _write(session, exists=f"a credential named {new_name!r} already exists"):
        if new_name is not None:
            c.name = _name(new_name)
        if secret is not None:
            c.summary = _summary_for(c.kind, secret)
            c.secret = box.encrypt(secret)
    return _credential_info(c)


def delete_credential(session: Session, name: str) -> None:
    refuse_if_used(session, f"credential {name!r}", credential=name)
    c = _credential(session, name)
    users = list(session.scalars(select(Host.name).where(Host.credential_id == c.id)))
    users += list(session.scalars(select(Project.name).where(Project.repo_credential_id == c.id)))
    if users:
        raise Conflict(f"credential {name!r} is in use by {', '.join(sorted(users))}", field="name")
    with _write(session, exists="", in_use=f"credential {name!r} is in use"):
        session.delete(c)


def load_secret(session: Session, box: SecretBox, credential_name: str) -> str:
    """The decrypted secret of a credential: for the processes that connect, never for responses."""
    return box.decrypt(_credential(session, credential_name, field="credential").secret)


def rotate_secrets(session: Session, box: SecretBox) -> int:
    """Encrypt every stored secret (credentials, webhook secrets) again under ``box``'s first key."""
    count = 0
    for c in session.scalars(select(Credential)):
        c.secret = box.rotate(c.secret)
        count += 1
    for w in session.scalars(select(Webhook).where(Webhook.secret.is_not(None))):
        assert w.secret is not None
        w.secret = box.rotate(w.secret)
        count += 1
    session.flush()
    return count


# --- hosts ----------------------------------------------------------------------
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


# --- projects -------------------------------------------------------------------
def _project(session: Session, name: str, field: str = "name") -> Project:
    p = session.scalar(select(Project).where(Project.name == name))
    if p is None:
        raise NotFound(f"no project named {name!r}", field=field)
    return p


def _recipe_config(repo_url: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` as the fields of ``Recipe`` other than the repository's own."""
    own = _RECIPE_OWN_FIELDS & set(config)
    if own:
        raise InvalidInput(f"{sorted(own)[0]} is set on the project, not in its config", field="config")
    try:
        recipe = Recipe(repo_url=repo_url, **config)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"config.{loc}: {err['msg']}", field=f"config.{loc}") from None
    except TypeError as exc:
        raise InvalidInput(f"config: {exc}", field="config") from None
    return recipe.model_dump(mode="json", exclude=set(_RECIPE_OWN_FIELDS))


def create_project(
    session: Session,
    name: str,
    repo_url: str,
    config: Mapping[str, Any],
    *,
    repo_credential: str | None = None,
) -> ProjectInfo:
    """A project; ``config`` holds the ``Recipe`` fields (deploy_path, build_hooks, ...)."""
    p = Project(
        name=_name(name),
        repo_url=_text(repo_url, "repo_url", 1000),
        config=_recipe_config(repo_url, config),
        repo_credential=(
            _credential(session, repo_credential, "repo_credential") if repo_credential is not None else None
        ),
    )
    with _write(session, exists=f"a project named {name!r} already exists"):
        session.add(p)
    return _project_info(p)


def get_project(session: Session, name: str) -> ProjectInfo:
    return _project_info(_project(session, name))


def list_projects(session: Session) -> list[ProjectInfo]:
    return [_project_info(p) for p in session.scalars(select(Project).order_by(Project.name))]


def update_project(
    session: Session,
    name: str,
    *,
    new_name: str | None = None,
    repo_url: str | None = None,
    repo_credential: str | None | _Keep = KEEP,
    config: Mapping[str, Any] | None = None,
) -> ProjectInfo:
    """Change a project; ``config`` replaces the whole recipe configuration."""
    p = _project(session, name)
    with _write(session, exists=f"a project named {new_name!r} already exists"):
        if new_name is not None:
            p.name = _name(new_name)
        if repo_url is not None:
            p.repo_url = _text(repo_url, "repo_url", 1000)
        if repo_credential is not KEEP:
            p.repo_credential = (
                _credential(session, repo_credential, "repo_credential") if repo_credential else None
            )
        if config is not None:
            p.config = _recipe_config(p.repo_url, config)
    return _project_info(p)


def delete_project(session: Session, name: str) -> None:
    """Delete a project and its environments (release history stays in the event log)."""
    refuse_if_used(session, f"project {name!r}", project=name)
    p = _project(session, name)
    with _write(session, exists="", in_use=f"project {name!r} is in use"):
        session.delete(p)


def project_recipe(session: Session, project: str) -> Recipe:
    return _project_info(_project(session, project, field="project")).recipe()


# --- environments ---------------------------------------------------------------
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


# --- releases (read model) --------------------------------------------------------
_STEP_ORDER = {s: i for i, s in enumerate(HOST_STEPS)}


def get_release(session: Session, release_id: str) -> ReleaseView:
    """A release with its hosts (plan order) and their steps (run order)."""
    r = session.get(Release, release_id)
    if r is None:
        raise NotFound(f"no release {release_id!r}", field="release_id")
    hosts = session.scalars(
        select(ReleaseHost).where(ReleaseHost.release_id == release_id).order_by(ReleaseHost.position)
    ).all()
    steps: dict[str, list[HostStepView]] = {}
    for s in session.scalars(select(HostStep).where(HostStep.release_id == release_id)):
        steps.setdefault(s.host, []).append(
            HostStepView(s.step, s.status, s.exit_code, s.started_at, s.duration, s.output_tail)
        )
    return ReleaseView(
        **_summary_fields(r),
        hosts=tuple(
            ReleaseHostView(
                h.host,
                h.status,
                h.failure,
                h.activated,
                h.previous_release,
                tuple(sorted(steps.get(h.host, []), key=lambda v: _STEP_ORDER.get(v.step, len(_STEP_ORDER)))),
            )
            for h in hosts
        ),
    )


def list_releases(
    session: Session,
    project: str | None = None,
    environment: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ReleaseSummary]:
    """Releases newest first, optionally filtered."""
    _int_range(limit, "limit", 1, 1000)
    _int_range(offset, "offset", 0)
    query = select(Release)
    if project is not None:
        query = query.where(Release.project == project)
    if environment is not None:
        query = query.where(Release.environment == environment)
    if status is not None:
        query = query.where(Release.status == status)
    query = query.order_by(Release.requested_at.desc(), Release.id.desc()).limit(limit).offset(offset)
    return [ReleaseSummary(**_summary_fields(r)) for r in session.scalars(query)]


def count_releases(session: Session, project: str | None = None, status: str | None = None) -> int:
    query = select(func.count()).select_from(Release)
    if project is not None:
        query = query.where(Release.project == project)
    if status is not None:
        query = query.where(Release.status == status)
    return int(session.scalar(query) or 0)


def projection_position(session: Session, name: str = "releases") -> int:
    """The last stream sequence the named projection has applied (0 before any)."""
    return int(session.scalar(select(ProjectionPosition.seq).where(ProjectionPosition.name == name)) or 0)


# --- webhooks -------------------------------------------------------------------
MAX_WEBHOOK_SECRET = 1024


@dataclass(frozen=True)
class WebhookInfo:
    """A webhook as the API shows it: whether it has a secret, never the secret."""

    id: int
    name: str
    url: str
    kind: str
    project: str | None
    events: tuple[str, ...]
    enabled: bool
    has_secret: bool
    created_at: datetime


@dataclass(frozen=True)
class WebhookTarget:
    """What the deliverer needs to post: for the notifier only, never for responses or logs."""

    id: int
    name: str
    url: str
    kind: str
    secret: str | None
    enabled: bool

    def __repr__(self) -> str:
        return f"WebhookTarget(id={self.id!r}, name={self.name!r}, kind={self.kind!r}, url=<hidden>)"


@dataclass(frozen=True)
class WebhookDeliveryInfo:
    webhook_id: int
    seq: int
    release_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime


def _webhook_info(w: Webhook) -> WebhookInfo:
    return WebhookInfo(
        w.id, w.name, w.url, w.kind, w.project, tuple(w.events), w.enabled, w.secret is not None, w.created_at
    )


def _delivery_info(d: WebhookDelivery) -> WebhookDeliveryInfo:
    return WebhookDeliveryInfo(
        d.webhook_id,
        d.seq,
        d.release_id,
        d.event_type,
        d.status,
        d.attempts,
        d.last_status_code,
        d.last_error,
        d.next_attempt_at,
        d.updated_at,
    )


def _webhook(session: Session, name: str, field: str = "name") -> Webhook:
    w = session.scalar(select(Webhook).where(Webhook.name == name))
    if w is None:
        raise NotFound(f"no webhook named {name!r}", field=field)
    return w


def _webhook_secret(box: SecretBox, secret: str | None) -> bytes | None:
    if secret is None:
        return None
    return box.encrypt(_text(secret, "secret", MAX_WEBHOOK_SECRET))


def create_webhook(
    session: Session,
    box: SecretBox,
    name: str,
    url: str,
    kind: str,
    *,
    secret: str | None = None,
    project: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool = True,
) -> WebhookInfo:
    """A webhook; ``events`` lists wire types or prefixes (``release.``), None for the defaults."""
    w = Webhook(
        name=_name(name),
        url=webhooks.validate_url(url),
        kind=webhooks.validate_kind(kind),
        secret=_webhook_secret(box, secret),
        project=_project(session, project, field="project").name if project is not None else None,
        events=list(webhooks.validate_events(events)),
        enabled=bool(enabled),
    )
    with _write(session, exists=f"a webhook named {name!r} already exists"):
        session.add(w)
    return _webhook_info(w)


def get_webhook(session: Session, name: str) -> WebhookInfo:
    return _webhook_info(_webhook(session, name))


def list_webhooks(session: Session) -> list[WebhookInfo]:
    return [_webhook_info(w) for w in session.scalars(select(Webhook).order_by(Webhook.name))]


def update_webhook(
    session: Session,
    box: SecretBox,
    name: str,
    *,
    url: str | None = None,
    kind: str | None = None,
    secret: str | None | _Keep = KEEP,
    project: str | None | _Keep = KEEP,
    events: Sequence[str] | None | _Keep = KEEP,
    enabled: bool | None = None,
) -> WebhookInfo:
    """Change a webhook; ``secret``/``project`` None clear them, ``events=None`` means the defaults."""
    w = _webhook(session, name)
    with _write(session, exists=""):
        if url is not None:
            w.url = webhooks.validate_url(url)
        if kind is not None:
            w.kind = webhooks.validate_kind(kind)
        if secret is not KEEP:
            w.secret = _webhook_secret(box, secret)
        if project is not KEEP:
            w.project = _project(session, project, field="project").name if project is not None else None
        if events is not KEEP:
            w.events = list(webhooks.validate_events(events))
        if enabled is not None:
            w.enabled = bool(enabled)
    return _webhook_info(w)


def delete_webhook(session: Session, name: str) -> None:
    """Delete a webhook and its delivery records."""
    w = _webhook(session, name)
    with _write(session, exists="", in_use=f"webhook {name!r} is in use"):
        session.delete(w)


def webhook_routes(session: Session) -> list[webhooks.Route]:
    """Every enabled webhook's filter, for routing events (no URLs, no secrets)."""
    columns = (Webhook.id, Webhook.project, Webhook.events, Webhook.created_at)
    rows = session.execute(select(*columns).where(Webhook.enabled.is_(True))).all()
    return [webhooks.Route(i, project, tuple(events), since=created) for i, project, events, created in rows]


def webhook_target(session: Session, box: SecretBox, webhook_id: int) -> WebhookTarget | None:
    """The webhook with its decrypted secret, or None when it was deleted."""
    w = session.get(Webhook, webhook_id)
    if w is None:
        return None
    secret = box.decrypt(w.secret) if w.secret is not None else None
    return WebhookTarget(w.id, w.name, w.url, w.kind, secret, w.enabled)


def get_webhook_delivery(session: Session, webhook_id: int, seq: int) -> WebhookDeliveryInfo | None:
    d = session.get(WebhookDelivery, (webhook_id, seq))
    return _delivery_info(d) if d is not None else None


def record_webhook_attempt(
    session: Session,
    webhook_id: int,
    seq: int,
    *,
    release_id: str,
    event_type: str,
    status: str,
    status_code: int | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> WebhookDeliveryInfo:
    """Count one more attempt of a delivery and its outcome (``retrying``, ``delivered``, ``failed``)."""
    _choice(status, ("retrying", "delivered", "failed"), "status")
    d = session.get(WebhookDelivery, (webhook_id, seq))
    with _write(session, exists=f"delivery {webhook_id}-{seq} was recorded concurrently", field="seq"):
        if d is None:
            d = WebhookDelivery(
                webhook_id=webhook_id, seq=seq, release_id=release_id, event_type=event_type, attempts=0
            )
            session.add(d)
        d.attempts = (d.attempts or 0) + 1
        d.status = status
        d.last_status_code = status_code
        d.last_error = error[:2000] if error else None
        d.next_attempt_at = next_attempt_at
        d.updated_at = utcnow()
    return _delivery_info(d)


def list_webhook_deliveries(session: Session, name: str, limit: int = 50) -> list[WebhookDeliveryInfo]:
    """A webhook's deliveries, newest event first."""
    _int_range(limit, "limit", 1, 1000)
    w = _webhook(session, name)
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == w.id)
        .order_by(WebhookDelivery.seq.desc())
        .limit(limit)
    )
    return [_delivery_info(d) for d in session.scalars(query)]


# --- API tokens -----------------------------------------------------------------
# Kept together at the end of the module (the import too) so this section stays one block.
from datetime import timedelta  # noqa: E402

from ferry import auth  # noqa: E402
from ferry.db.models import ApiToken  # noqa: E402


@dataclass(frozen=True)
class TokenInfo:
    """A token without its secret: only ``create_token``'s caller ever sees the token itself."""

    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None


def _token_info(t: ApiToken) -> TokenInfo:
    return TokenInfo(t.id, t.name, t.role, t.created_at, t.last_used_at)


def _token(session: Session, name: str, field: str = "name") -> ApiToken:
    t = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if t is None:
        raise NotFound(f"no API token named {name!r}", field=field)
    return t


def create_token(session: Session, name: str, role: str, token_hash: str) -> TokenInfo:
    """Record a token by its sha256 (``ferry.auth.hash_token``); the token itself is never stored."""
    _name(name)
    _choice(role, auth.ROLES, "role")
    if not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise InvalidInput("token_hash must be 64 lowercase hex digits (sha256)", field="token")
    t = ApiToken(name=name, role=role, token_hash=token_hash)
    with _write(session, exists=f"an API token named {name!r} already exists"):
        session.add(t)
    return _token_info(t)


def ensure_token(session: Session, name: str, role: str, token_hash: str) -> TokenInfo:
    """Make ``name`` the token with this hash and role, creating it or replacing its secret."""
    t = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if t is None:
        return create_token(session, name, role, token_hash)
    if t.token_hash != token_hash or t.role != role:
        with _write(session, exists="another API token has the same secret", field="token"):
            t.token_hash, t.role = token_hash, role
    return _token_info(t)


def token_exists(session: Session, name: str) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None


def admin_token_exists(session: Session, *, besides: str | None = None) -> bool:
    """Whether any admin token (other than ``besides``) exists."""
    query = select(ApiToken.id).where(ApiToken.role == "admin")
    if besides is not None:
        query = query.where(ApiToken.name != besides)
    return session.scalar(query.limit(1)) is not None


def get_token(session: Session, name: str) -> TokenInfo:
    return _token_info(_token(session, name))


def list_tokens(session: Session) -> list[TokenInfo]:
    return [_token_info(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(session: Session, name: str) -> None:
    """Delete a token: the next request that presents it is refused. The last admin token stays
    (with auth on, nobody could make another through the API)."""
    t = _token(session, name)
    if t.role == "admin" and not admin_token_exists(session, besides=name):
        raise Conflict(
            f"{name!r} is the last admin token: create another admin token first, or everyone is locked out",
            field="name",
        )
    with _write(session, exists=f"API token {name!r} changed concurrently"):
        session.delete(t)


def token_by_hash(session: Session, token_hash: str) -> TokenInfo | None:
    """The token whose sha256 is ``token_hash``, or None.

    The lookup is an indexed equality on a hash of a 256-bit secret, so its timing tells a
    caller nothing usable; the final comparison is constant-time all the same.
    """
    t = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
    if t is None or not auth.same_hash(t.token_hash, token_hash):
        return None
    return _token_info(t)


def touch_token(session: Session, token_id: int, now: datetime, interval: float) -> bool:
    """Set ``last_used_at = now`` unless it was set within ``interval`` seconds; True if written."""
    cutoff = now - timedelta(seconds=interval)
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id)
        .where((ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < cutoff))
        .values(last_used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
