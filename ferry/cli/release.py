"""``ferry release …``: create, show, list, approve, reject and cancel releases through the REST API.

The server is ``FERRY_URL`` (default ``http://127.0.0.1:8000``). A 4xx answer prints the API's
error (with the field at fault) and exits 2; an unreachable server or a 5xx exits 1. The live
progress display (``watch``) lives in its own module and reuses ``client()`` and ``wait_for``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import typer

from ferry.infra.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "rejected"})
EXIT_FAILED = 1
EXIT_CLIENT_ERROR = 2

app = typer.Typer(help="Create and follow releases.", no_args_is_help=True, add_completion=False)


def server_url() -> str:
    return (Settings.from_env().url or DEFAULT_URL).rstrip("/")


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer $FERRY_TOKEN`` when set (a gateway with auth on needs it)."""
    token = (Settings.from_env().token or "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(timeout: float = 30.0) -> httpx.Client:
    """An HTTP client for the ferry API: ``FERRY_TOKEN`` as a bearer token; without auth, the
    gateway takes ``X-Ferry-User`` (``FERRY_USER`` or the login name) as the caller."""
    user = Settings.from_env().user or ""
    headers = {"X-Ferry-User": user} if user else {}
    headers.update(auth_headers())
    return httpx.Client(base_url=server_url(), timeout=timeout, headers=headers)


class ApiError(Exception):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    @property
    def exit_code(self) -> int:
        return EXIT_CLIENT_ERROR if 400 <= self.status < 500 else EXIT_FAILED

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.message}{where} [{self.status} {self.code}]"


def call(
    http: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    """One API call; the parsed JSON answer, or ``ApiError`` with the API's message."""
    try:
        r = http.request(method, path, json=body, params=params)
    except httpx.HTTPError as exc:
        raise ApiError(0, "UNREACHABLE", f"cannot reach ferry at {http.base_url}: {exc}") from exc
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            raise ApiError(r.status_code, str(err.get("code")), str(err.get("message")), err.get("field"))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ApiError(r.status_code, "HTTP", r.text[:500] or r.reason_phrase) from None
    return r.json() if r.content else None


def wait_for(
    http: httpx.Client,
    release_id: str,
    *,
    interval: float = 1.0,
    timeout: float | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll ``GET /api/releases/{id}`` until the release is terminal; returns its last view.

    ``on_update`` sees every view whose ``last_seq`` moved. ``TimeoutError`` after ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = -1
    while True:
        view: dict[str, Any] = call(http, "GET", f"/api/releases/{release_id}")
        if on_update is not None and view.get("last_seq", 0) != seen:
            seen = view.get("last_seq", 0)
            on_update(view)
        if view.get("status") in TERMINAL:
            return view
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"release {release_id} still {view.get('status')} after {timeout}s")
        time.sleep(interval)


def _fail(exc: ApiError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def describe(view: dict[str, Any]) -> str:
    """A short human summary of a release view."""
    lines = [
        f"release {view['id']}: {view['status']}",
        f"  {view['project']} -> {view['environment']} at {view['ref']}"
        + (f" ({view['commit'][:12]})" if view.get("commit") else ""),
        f"  requested by {view['requested_by']} at {view.get('requested_at')}",
    ]
    if view.get("artifact"):
        a = view["artifact"]
        lines.append(f"  artifact {a['digest'][:16]}… {a['size']} bytes{' (reused)' if a['reused'] else ''}")
    if view.get("reason"):
        lines.append(f"  reason: {view['reason']}")
    if view.get("status") == "paused" and view.get("pause"):
        at = view["pause"].get("resume_at")
        then = f"resumes at {at}" if at else f"ferry release resume {view['id']} goes on"
        lines.append(f"  paused after the canary: {then}")
    for h in view.get("hosts", []):
        done = sum(1 for s in h["steps"] if s["status"] == "succeeded")
        failure = f" — {h['failure']}" if h.get("failure") else ""
        lines.append(f"  {h['name']}: {h['status']} ({done}/{len(h['steps'])} steps){failure}")
    return "\n".join(lines)


@app.command()
def create(
    project: str = typer.Option(..., "--project", "-p", help="Project name."),
    env: str = typer.Option(..., "--env", "-e", help="Environment name."),
    ref: str = typer.Option(..., "--ref", "-r", help="Branch, tag or commit."),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the release to its end; non-zero unless it succeeded."
    ),
    watch: bool = typer.Option(
        False, "--watch", help="Follow the release live (per-host progress); non-zero unless it succeeded."
    ),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --wait: give up after this many seconds."),
    interval: float = typer.Option(1.0, "--interval", help="With --wait: seconds between polls."),
) -> None:
    """Request a release; prints its id."""
    with client() as http:
        try:
            created = call(
                http, "POST", "/api/releases", {"project": project, "environment": env, "ref": ref}
            )
            typer.echo(created["id"])
        except ApiError as exc:
            _fail(exc)
        _follow(http, created["id"], wait=wait, watch=watch, timeout=timeout, interval=interval)


def _follow(
    http: httpx.Client, release_id: str, *, wait: bool, watch: bool, timeout: float, interval: float
) -> None:
    """With --watch or --wait, follow the release to its end and exit non-zero unless it succeeded."""
    if watch:
        raise typer.Exit(_watch(release_id))
    if not wait:
        return
    last: dict[str, str] = {}

    def progress(view: dict[str, Any]) -> None:
        if view["status"] != last.get("status"):
            last["status"] = view["status"]
            typer.echo(f"{view['id']}: {view['status']}", err=True)

    try:
        view = wait_for(http, release_id, interval=interval, timeout=timeout, on_update=progress)
    except ApiError as exc:
        _fail(exc)
    except TimeoutError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(describe(view), err=True)
    if view["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def rollback(
    release_id: str = typer.Argument("", metavar="[ID]", help="The release to go back to."),
    project: str = typer.Option("", "--project", "-p", help="Without ID: the project."),
    env: str = typer.Option("", "--env", "-e", help="Without ID: the environment."),
    wait: bool = typer.Option(False, "--wait", help="Follow it to its end; non-zero unless it succeeded."),
    watch: bool = typer.Option(False, "--watch", help="Follow it live."),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --wait: give up after this many seconds."),
    interval: float = typer.Option(1.0, "--interval", help="With --wait: seconds between polls."),
) -> None:
    """Release an earlier release's commit again (its artifact is reused); prints the new release id.

    Without ID, goes back to the last succeeded release before the latest succeeded one of --project/--env.
    """
    with client() as http:
        try:
            target = release_id or _previous_success(http, project, env)
            created = call(http, "POST", f"/api/releases/{target}/rollback")
            typer.echo(created["id"])
        except ApiError as exc:
            _fail(exc)
        _follow(http, created["id"], wait=wait, watch=watch, timeout=timeout, interval=interval)


@app.command()
def retry(
    release_id: str = typer.Argument(..., metavar="ID", help="The release whose failed hosts to retry."),
    wait: bool = typer.Option(False, "--wait", help="Follow it to its end; non-zero unless it succeeded."),
    watch: bool = typer.Option(False, "--watch", help="Follow it live."),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --wait: give up after this many seconds."),
    interval: float = typer.Option(1.0, "--interval", help="With --wait: seconds between polls."),
) -> None:
    """Release ID's artifact again to the hosts where it failed only; prints the new release id."""
    with client() as http:
        try:
            created = call(http, "POST", f"/api/releases/{release_id}/retry")
            typer.echo(created["id"])
        except ApiError as exc:
            _fail(exc)
        _follow(http, created["id"], wait=wait, watch=watch, timeout=timeout, interval=interval)


def _previous_success(http: httpx.Client, project: str, env: str) -> str:
    if not project or not env:
        typer.echo("error: give a release ID, or --project and --env", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR)
    found = call(
        http,
        "GET",
        "/api/releases",
        params={"project": project, "environment": env, "status": "succeeded", "limit": "2"},
    )
    releases = found["releases"]
    if len(releases) < 2:
        typer.echo(f"error: {project}/{env} has no earlier succeeded release to go back to", err=True)
        raise typer.Exit(EXIT_FAILED)
    return str(releases[1]["id"])


def _watch(release_id: str) -> int:
    import asyncio

    from rich.console import Console

    from ferry.cli.watch import watch_release

    ws_url = Settings.from_env().ws_url
    return asyncio.run(watch_release(release_id, api_url=server_url(), ws_url=ws_url, console=Console()))


@app.command()
def show(
    release_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Show one release."""
    with client() as http:
        try:
            view = call(http, "GET", f"/api/releases/{release_id}")
        except ApiError as exc:
            _fail(exc)
    typer.echo(json.dumps(view, indent=2) if as_json else describe(view))


@app.command("list")
def list_(
    project: str | None = typer.Option(None, "--project", "-p"),
    env: str | None = typer.Option(None, "--env", "-e"),
    status: str | None = typer.Option(None, "--status"),
    queued: bool = typer.Option(
        False, "--queued", help="Only releases waiting their turn (another release holds the environment)."
    ),
    limit: int = typer.Option(20, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """List releases, newest first."""
    if queued:
        status = "queued"
    given = {"project": project, "environment": env, "status": status, "limit": str(limit)}
    params = {k: v for k, v in given.items() if v is not None}
    with client() as http:
        try:
            releases = call(http, "GET", "/api/releases", params=params)["releases"]
        except ApiError as exc:
            _fail(exc)
    if as_json:
        _print_json(releases)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "project", "env", "ref", "status", "requested by", "requested at")
    for r in releases:
        table.add_row(
            r["id"],
            r["project"],
            r["environment"],
            r["ref"],
            r["status"],
            r["requested_by"],
            str(r["requested_at"]),
        )
    Console().print(table)


def _decide(release_id: str, action: str, reason: str | None) -> None:
    body = {"reason": reason} if reason is not None else None
    with client() as http:
        try:
            view = call(http, "POST", f"/api/releases/{release_id}/{action}", body)
        except ApiError as exc:
            _fail(exc)
    typer.echo(f"{view['id']}: {view['status']}")


@app.command()
def approve(release_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Approve a release that awaits approval."""
    _decide(release_id, "approve", None)


@app.command()
def reject(
    release_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Reject a release that awaits approval."""
    _decide(release_id, "reject", reason)


@app.command()
def cancel(
    release_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Cancel a release before any host runs it."""
    _decide(release_id, "cancel", reason)


@app.command()
def resume(release_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Resume a paused canary: release the remaining hosts."""
    _decide(release_id, "resume", None)


def _register_watch() -> None:
    from ferry.cli.watch_cmd import register

    register(app)


_register_watch()
