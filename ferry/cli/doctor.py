"""``ferry doctor PROJECT ENV``: does every host run the release the history says? Reads only."""

from __future__ import annotations

import json

import typer

from ferry.cli.release import EXIT_FAILED, ApiError, _fail, call, client


def doctor(
    project: str = typer.Argument(..., help="The project."),
    env: str = typer.Argument(..., help="The environment."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Read `current` on every host of PROJECT/ENV (through the agents, changing nothing) and report each
    host whose live release differs from the record; exits 1 when one does or cannot be read."""
    with client(timeout=120.0) as http:
        try:
            report = call(http, "GET", f"/api/projects/{project}/environments/{env}/doctor")
        except ApiError as exc:
            _fail(exc)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for h in report["hosts"]:
            if h["error"]:
                typer.echo(f"{h['name']}: could not read: {h['error']}")
            elif h["drift"]:
                live, recorded = h["live"] or "nothing", h["release"] or "nothing"
                typer.echo(f"{h['name']}: DRIFT: runs {live}, the history says {recorded}")
            else:
                typer.echo(f"{h['name']}: ok ({h['live'] or 'never released'})")
    if report["drift"] or any(h["error"] for h in report["hosts"]):
        raise typer.Exit(EXIT_FAILED)
