"""Projects: repository, credential and build recipe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.inuse import refuse_if_used
from ferry.db.models import Project
from ferry.domain.errors import InvalidInput, NotFound
from ferry.domain.events import Recipe
from ferry.domain.validation import MAX_URL_LENGTH

from ._common import KEEP, _Keep, _name, _text, _write
from .credentials import _credential

_RECIPE_OWN_FIELDS = frozenset({"repo_url", "repo_credential"})


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


def _project_info(p: Project) -> ProjectInfo:
    return ProjectInfo(
        p.id,
        p.name,
        p.repo_url,
        p.repo_credential.name if p.repo_credential else None,
        dict(p.config),
        p.created_at,
    )


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
        repo_url=_text(repo_url, "repo_url", MAX_URL_LENGTH),
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
            p.repo_url = _text(repo_url, "repo_url", MAX_URL_LENGTH)
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
