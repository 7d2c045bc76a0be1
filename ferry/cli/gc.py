"""``ferry gc``: one garbage-collection pass on the gateway (``POST /api/gc``, admin), over HTTP."""

from __future__ import annotations

import json

import typer

from ferry.cli.release import ApiError, _fail, call, client


def gc(as_json: bool = typer.Option(False, "--json", help="Print the API's JSON.")) -> None:
    """Delete the artifacts no kept release needs (the gateway also does this every FERRY_GC_INTERVAL)."""
    with client(timeout=300.0) as http:
        try:
            report = call(http, "POST", "/api/gc")
        except ApiError as exc:
            _fail(exc)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"removed {report['removed']} artifacts ({report['bytes_freed']} bytes freed); "
        f"kept {report['kept_artifacts']} for {report['kept_releases']} kept releases; "
        f"{report['spared_young']} younger than the grace period left for later"
    )
