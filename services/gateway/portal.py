"""The portal: server-rendered pages, their small ES modules, and GoJS from node_modules.

Pages read the read model (and, for a release, the event store) directly; the
browser talks to the REST API and the notifier's WebSocket for everything live.
Pages are Jinja2 templates (Starlette's ``Jinja2Templates``) with autoescape on: every
value is escaped, and all markup lives in ``templates/``, none in Python strings.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ferry.db import repo
from ferry.domain.errors import FerryError, InvalidInput, NotFound
from ferry.infra.envlock import EnvLock
from ferry.infra.eventstore import RELEASE_ID
from services.gateway.auth import principal

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
GOJS_RELATIVE = Path("node_modules/gojs/release/go.js")
NPM_HINT = "run `npm install --no-audit --no-fund` at the repository root (it installs the gojs package)"


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is escaped; templates hold all the markup
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the page, not renders empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def page(request: Request, template: str, title: str, *, status: int = 200, **context: Any) -> Response:
    """``template`` (which extends base.html) as an HTML response, with the account corner."""
    settings = _settings(request)
    values = {
        "title": title,
        "license_key": getattr(settings, "gojs_license_key", "") or "",
        "caller_principal": principal(request),
        **context,
    }
    return templates.TemplateResponse(request, template, values, status_code=status)


def _gw(request: Request) -> Any:
    return getattr(request.app.state, "gw", None)


def _settings(request: Request) -> Any:
    gw = _gw(request)
    return gw.settings if gw is not None else None


def gojs_path() -> Path | None:
    """go.js from the gojs npm package, beside the repository or the current directory."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = root / GOJS_RELATIVE
        if candidate.is_file():
            return candidate
    return None


def ws_base(request: Request) -> str:
    settings = _settings(request)
    public = getattr(settings, "public_ws_url", None)
    if public:
        return str(public).rstrip("/")
    host = request.url.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = getattr(settings, "ws_port", 8001)
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{host}:{port}"


# --- filters ---------------------------------------------------------------------
def short(commit: str | None) -> str:
    return (commit or "")[:10]


def fmt_duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


templates.env.filters["short"] = short
templates.env.filters["duration"] = fmt_duration


def not_found(request: Request, what: str) -> Response:
    return page(request, "not_found.html", "Not found", status=404, what=what)


def unavailable(request: Request, message: str) -> Response:
    return page(request, "unavailable.html", "Unavailable", status=503, message=message)


async def _read(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    gw = _gw(request)

    def run() -> Any:
        with gw.sessions() as session:
            return fn(session, *args, **kwargs)

    return await run_in_threadpool(run)


# --- pages -------------------------------------------------------------------------
async def projects_page(request: Request) -> Response:
    def load(session: Any) -> tuple[list[Any], dict[str, list[Any]]]:
        projects = repo.list_projects(session)
        return projects, {p.name: repo.list_environments(session, p.name) for p in projects}

    projects, envs = await _read(request, load)
    return page(request, "projects.html", "Projects", projects=projects, environments=envs)


async def project_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        project = await _read(request, repo.get_project, name)
        environments = await _read(request, repo.list_environments, name)
    except NotFound:
        return not_found(request, f"project {name}")
    hosts = {h.name: h for h in await _read(request, repo.list_hosts)}
    releases = await _read(request, repo.list_releases, project=name, limit=100)
    used = sorted({h for e in environments for h in e.hosts})
    gw = _gw(request)
    try:  # one release at a time: which one runs, which wait
        locks = {e.name: await gw.bus.locks.get(name, e.name) for e in environments}
    except FerryError:
        locks = {e.name: EnvLock(name, e.name) for e in environments}
    return page(
        request,
        "project.html",
        f"{project.name} · projects",
        project=project,
        environments=environments,
        hosts=[hosts[h] for h in used if h in hosts],
        releases=releases,
        locks=locks,
    )


async def release_form_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        environments = await _read(request, repo.list_environments, name)
    except NotFound:
        return not_found(request, f"project {name}")
    return page(
        request, "release_form.html", f"New release · {name}", project=name, environments=environments
    )


async def release_page(request: Request) -> Response:
    release_id = request.path_params["id"]
    if not RELEASE_ID.match(release_id):
        return not_found(request, f"release {release_id}")
    gw = _gw(request)
    try:
        version = (await gw.bus.histories.get(release_id)).count
    except InvalidInput:
        return not_found(request, f"release {release_id}")
    except FerryError as exc:
        return unavailable(request, f"the event store did not answer: {exc}")
    if version == 0:
        return not_found(request, f"release {release_id}")
    return page(
        request,
        "release.html",
        f"Release {release_id}",
        release_id=release_id,
        ws_base=ws_base(request),
        gojs=gojs_path() is not None,
        npm_hint=NPM_HINT,
    )


async def gojs_file(request: Request) -> Response:
    path = gojs_path()
    if path is None:
        message = f"// GoJS is not installed: {NPM_HINT}.\n"
        return PlainTextResponse(message, status_code=503, media_type="text/javascript")
    return FileResponse(path, media_type="text/javascript")


def _pages() -> list[Route | Mount]:
    return [
        Route("/", projects_page, name="portal:projects"),
        Route("/projects/{name}", project_page, name="portal:project"),
        Route("/projects/{name}/release", release_form_page, name="portal:release_form"),
        Route("/releases/{id}", release_page, name="portal:release"),
        Route("/static/vendor/go.js", gojs_file, name="portal:gojs"),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


routes = _pages()

__all__ = ["routes", "gojs_path", "ws_base"]
