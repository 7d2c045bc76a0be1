"""Per-project secret variables, encrypted at rest; values leave only through ``load_variables``.

Listings show names and times, never values (nor anything derived from them): a variable's
value goes to the builder and the agents, which give it to hooks and host commands and mask
it in their output (``ferry.domain.masking``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ferry.db.models import Project, ProjectVariable
from ferry.domain.errors import Conflict, NotFound
from ferry.domain.events import utcnow
from ferry.domain.variables import MAX_VARIABLES, check_name, check_value
from ferry.infra.secrets import SecretBox

from ._common import _write
from .projects import _project


@dataclass(frozen=True)
class VariableInfo:
    project: str
    name: str
    created_at: datetime
    updated_at: datetime


def _info(project: str, v: ProjectVariable) -> VariableInfo:
    return VariableInfo(project, v.name, v.created_at, v.updated_at)


def _variable(session: Session, project_id: int, name: str) -> ProjectVariable | None:
    return session.scalar(
        select(ProjectVariable).where(ProjectVariable.project_id == project_id, ProjectVariable.name == name)
    )


def list_variables(session: Session, project: str) -> list[VariableInfo]:
    """The project's variables by name: names and times only."""
    p = _project(session, project, field="project")
    rows = session.scalars(
        select(ProjectVariable).where(ProjectVariable.project_id == p.id).order_by(ProjectVariable.name)
    )
    return [_info(p.name, v) for v in rows]


def get_variable(session: Session, project: str, name: str) -> VariableInfo:
    p = _project(session, project, field="project")
    v = _variable(session, p.id, name)
    if v is None:
        raise NotFound(f"project {project!r} has no variable named {name!r}", field="name")
    return _info(p.name, v)


def set_variable(
    session: Session, box: SecretBox, project: str, name: str, value: str
) -> tuple[VariableInfo, bool]:
    """Create or replace a variable (the value encrypted); ``(info, created)``."""
    check_name(name)
    check_value(value)
    p = _project(session, project, field="project")
    v = _variable(session, p.id, name)
    created = v is None
    if v is None:
        count = session.scalar(
            select(func.count()).select_from(ProjectVariable).where(ProjectVariable.project_id == p.id)
        )
        if (count or 0) >= MAX_VARIABLES:
            raise Conflict(f"project {project!r} already has {MAX_VARIABLES} variables", field="name")
        v = ProjectVariable(project_id=p.id, name=name, value=box.encrypt(value))
        with _write(session, exists=f"project {project!r} already has a variable named {name!r}"):
            session.add(v)
    else:
        with _write(session, exists=""):
            v.value = box.encrypt(value)
            v.updated_at = utcnow()
    return _info(p.name, v), created


def delete_variable(session: Session, project: str, name: str) -> None:
    p = _project(session, project, field="project")
    v = _variable(session, p.id, name)
    if v is None:
        raise NotFound(f"project {project!r} has no variable named {name!r}", field="name")
    with _write(session, exists=""):
        session.delete(v)


def load_variables(session: Session, box: SecretBox, project: str) -> dict[str, str]:
    """The project's variables, decrypted: for the builder and agents, never for responses.

    A project that no longer exists has none (a release outlives its project's configuration).
    """
    rows = session.execute(
        select(ProjectVariable.name, ProjectVariable.value)
        .join(Project, Project.id == ProjectVariable.project_id)
        .where(Project.name == project)
    )
    return {name: box.decrypt(token) for name, token in rows}


def rotate_variables(session: Session, box: SecretBox) -> int:
    """Encrypt every variable's value again under ``box``'s first key; how many."""
    count = 0
    for v in session.scalars(select(ProjectVariable)):
        v.value = box.rotate(v.value)
        count += 1
    session.flush()
    return count
