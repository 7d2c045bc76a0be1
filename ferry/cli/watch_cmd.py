"""``ferry release watch ID``: follow a release live until it ends, exiting with its outcome."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from ferry.cli.watch import EXIT_USAGE, watch_release
from ferry.domain.validation import RELEASE_ID_RE


def register(app: typer.Typer) -> None:
    """Add ``watch`` to the ``ferry release`` command group."""

    @app.command("watch")
    def watch(
        release_id: str = typer.Argument(..., metavar="ID", help="The release to follow."),
        url: str = typer.Option("http://127.0.0.1:8000", envvar="FERRY_URL", help="The gateway."),
        ws_url: str = typer.Option("ws://127.0.0.1:8001", envvar="FERRY_WS_URL", help="The notifier."),
        token: str | None = typer.Option(None, envvar="FERRY_WS_TOKEN", help="Notifier token, if set."),
        attempts: int = typer.Option(5, min=1, help="Reconnection attempts in a row before giving up."),
        plain: bool = typer.Option(False, "--plain", help="One line per event, even on a terminal."),
    ) -> None:
        """Follow a release live; exit 0 if it succeeded, 1 if it failed, was cancelled or rejected."""
        console = Console()
        if not RELEASE_ID_RE.match(release_id):
            console.print("error: a release id is 1-64 letters, digits, '_' or '-'", style="red")
            raise typer.Exit(EXIT_USAGE)
        code = asyncio.run(
            watch_release(
                release_id,
                api_url=url,
                ws_url=ws_url,
                console=console,
                live=False if plain else None,
                token=token,
                attempts=attempts,
            )
        )
        raise typer.Exit(code)
