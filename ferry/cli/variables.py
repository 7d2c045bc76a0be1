"""``ferry variables …``: a project's secret variables through the REST API.

A value is never an argument (it would sit in the shell's history and in every process list):
``set`` reads it from standard input when that is not a terminal (one trailing newline is
dropped, so ``echo "$TOKEN" | ferry variables set app TOKEN`` stores ``$TOKEN``), else asks
for it twice without echoing it. Values never come back: ``list`` shows names and times.
"""

from __future__ import annotations

import sys

import typer

from ferry.cli.release import ApiError, _fail, _print_json, call, client

app = typer.Typer(
    help="A project's secret variables (build hooks and host commands see them; output shows ***).",
    no_args_is_help=True,
    add_completion=False,
)


def _path(project: str, name: str | None = None) -> str:
    base = f"/api/projects/{project}/variables"
    return base if name is None else f"{base}/{name}"


def read_value(stdin_is_terminal: bool | None = None) -> str:
    """The value from standard input (one trailing newline dropped), or a hidden prompt."""
    terminal = sys.stdin.isatty() if stdin_is_terminal is None else stdin_is_terminal
    if terminal:
        value: str = typer.prompt("value", hide_input=True, confirmation_prompt=True)
        return value
    data = sys.stdin.read()
    return data[:-2] if data.endswith("\r\n") else data.removesuffix("\n")


@app.command("list")
def list_(
    project: str = typer.Argument(..., metavar="PROJECT"),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """The project's variables: names and when they were set, never values."""
    try:
        with client() as http:
            data = call(http, "GET", _path(project))
    except ApiError as exc:
        _fail(exc)
    if as_json:
        _print_json(data)
        return
    for v in data["variables"]:
        typer.echo(f"{v['name']}\tupdated {v['updated_at']}")


@app.command("set")
def set_(
    project: str = typer.Argument(..., metavar="PROJECT"),
    name: str = typer.Argument(..., metavar="NAME"),
) -> None:
    """Set or replace a variable; the value comes from standard input or a hidden prompt."""
    value = read_value()
    try:
        with client() as http:
            data = call(http, "PUT", _path(project, name), {"value": value})
    except ApiError as exc:
        _fail(exc)
    typer.echo(f"{project}: {data['name']} {'set' if data['created'] else 'replaced'}")


@app.command("delete")
def delete(
    project: str = typer.Argument(..., metavar="PROJECT"),
    name: str = typer.Argument(..., metavar="NAME"),
) -> None:
    """Delete a variable."""
    try:
        with client() as http:
            call(http, "DELETE", _path(project, name))
    except ApiError as exc:
        _fail(exc)
    typer.echo(f"{project}: {name} deleted")
