"""The portal: server-rendered pages, their small ES modules, and GoJS from node_modules.

Pages read the read model (and, for a release, the event store) directly; the
browser talks to the REST API and the notifier's WebSocket for everything live.
Templates are ``string.Template`` files: every value is HTML-escaped unless it
is a ``Markup`` fragment built here from escaped parts.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ferry.db import repo
from ferry.errors import FerryError, InvalidInput, NotFound
from ferry.eventstore import RELEASE_ID
from services.gateway.auth import principal

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
GOJS_RELATIVE = Path("node_modules/gojs/release/go.js")
NPM_HINT = "run `npm install --no-audit --no-fund` at the repository root (it installs the gojs package)"


class Markup(str):
    """HTML that is already safe to insert as is."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


@cache
def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(template: str, /, **values: object) -> Markup:
    return Markup(_template(template).substitute({k: esc(v) for k, v in values.items()}))


def page(
    request: Request, title: str, content: Markup, *, status: int = 200, head: str = "", scripts: str = ""
) -> HTMLResponse:
    settings = _settings(request)
    body = render(
        "base.html",
        title=title,
        content=content,
        head=Markup(head),
        scripts=Markup(scripts),
        license_key=getattr(settings, "gojs_license_key", "") or "",
        account=account_corner(request),
    )
    return HTMLResponse(body, status_code=status)


def account_corner(request: Request) -> Markup:
    """The "signed in as … / Sign out" corner when a token signed this request in; empty with auth off."""
    caller = principal(request)
    if caller is None:
        return Markup("")
    return Markup(
        '<div class="account" id="account">signed in as '
        f'<strong id="account-name">{esc(caller.name)}</strong> ({esc(caller.role)})'
        '<form method="post" action="/logout"><button type="submit">Sign out</button></form></div>'
    )


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


# --- formatting -------------------------------------------------------------------
def badge(status: str) -> Markup:
    return Markup(f'<span class="badge status-{esc(status)}">{esc(status.replace("_", " "))}</span>')


def short(commit: str | None) -> str:
    return (commit or "")[:10]


def fmt_time(at: datetime | None) -> Markup:
    if at is None:
        return Markup("")
    iso = at.isoformat()
    return Markup(f'<time datetime="{esc(iso)}">{esc(at.strftime("%Y-%m-%d %H:%M:%S"))}</time>')


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


def rows(items: Iterable[Markup], empty: str, colspan: int) -> Markup:
    out = join(items)
    return out or Markup(f'<tr><td colspan="{colspan}" class="empty">{esc(empty)}</td></tr>')


def not_found(request: Request, what: str) -> HTMLResponse:
    content = render("not_found.html", what=what)
    return page(request, "Not found", content, status=404)


def unavailable(request: Request, message: str) -> HTMLResponse:
    content = render("unavailable.html", message=message)
    return page(request, "Unavailable", content, status=503)


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
    items = (
        Markup(
            f'<tr><td><a href="/projects/{esc(p.name)}">{esc(p.name)}</a></td>'
            f"<td><code>{esc(p.repo_url)}</code></td>"
            f"<td>{join(esc(e.name) + Markup(' ') for e in envs[p.name])}</td>"
            f'<td><a class="button" href="/projects/{esc(p.name)}/release">New release</a></td></tr>'
        )
        for p in projects
    )
    content = render("projects.html", rows=rows(items, "No projects yet: register one through the API.", 4))
    return page(request, "Projects", content)


async def project_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        project = await _read(request, repo.get_project, name)
        environments = await _read(request, repo.list_environments, name)
    except NotFound:
        return not_found(request, f"project {name}")
    hosts = {h.name: h for h in await _read(request, repo.list_hosts)}
    releases = await _read(request, repo.list_releases, project=name, limit=100)

    env_rows = (
        Markup(
            f"<tr><td>{esc(e.name)}</td><td>{esc(len(e.hosts))}</td><td>{esc(e.concurrency)}</td>"
            f"<td>{'yes' if e.require_approval else 'no'}</td>"
            f"<td>{join(esc(h) + Markup(' ') for h in e.hosts)}</td></tr>"
        )
        for e in environments
    )
    used = sorted({h for e in environments for h in e.hosts})
    host_rows = (
        Markup(
            f"<tr><td>{esc(h)}</td><td>{esc(hosts[h].address)}:{esc(hosts[h].port)}</td>"
            f"<td>{esc(hosts[h].user)}</td><td>{esc(hosts[h].host_key_policy)}</td></tr>"
        )
        for h in used
        if h in hosts
    )
    release_rows = (
        Markup(
            f'<tr><td><a href="/releases/{esc(r.id)}">{esc(r.id)}</a></td><td>{badge(r.status)}</td>'
            f"<td>{esc(r.environment)}</td><td>{esc(r.ref)}</td><td><code>{esc(short(r.commit))}</code></td>"
            f"<td>{esc(r.requested_by)}</td><td>{fmt_time(r.requested_at)}</td>"
            f"<td>{esc(fmt_duration(r.requested_at, r.finished_at))}</td></tr>"
        )
        for r in releases
    )
    content = render(
        "project.html",
        name=project.name,
        repo_url=project.repo_url,
        environments=rows(env_rows, "No environments yet.", 5),
        hosts=rows(host_rows, "No hosts in any environment.", 4),
        releases=rows(release_rows, "No releases yet.", 8),
    )
    return page(request, f"{project.name} · projects", content)


async def release_form_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        environments = await _read(request, repo.list_environments, name)
    except NotFound:
        return not_found(request, f"project {name}")
    options = join(
        Markup(f'<option value="{esc(e.name)}">{esc(e.name)} ({esc(len(e.hosts))} hosts)</option>')
        for e in environments
    )
    content = render(
        "release_form.html",
        project=name,
        environments=options,
        disabled=Markup("" if environments else "disabled"),
    )
    scripts = '<script type="module" src="/static/release_form.js"></script>'
    return page(request, f"New release · {name}", content, scripts=scripts)


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
    gojs = gojs_path() is not None
    gojs_missing = Markup("") if gojs else render("gojs_missing.html", hint=NPM_HINT)
    content = render(
        "release.html",
        release_id=release_id,
        ws_base=ws_base(request),
        gojs_missing=gojs_missing,
    )
    scripts = (
        '<script src="/static/vendor/go.js"></script>' if gojs else ""
    ) + '<script type="module" src="/static/release_page.js"></script>'
    return page(request, f"Release {release_id}", content, scripts=scripts)


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
