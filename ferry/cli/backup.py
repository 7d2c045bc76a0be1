"""``ferry backup DEST`` and ``ferry restore SRC``: local admin commands on NATS and the database.

Like ``ferry secrets rotate`` they run on the machine (or with the settings) of the instance:
FERRY_NATS_URL (an identity that may read and create every stream: ``admin``), FERRY_DATABASE_URL
and FERRY_HOME (the key files). The archive holds the secret key and the work-signing key.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from ferry.domain.errors import FerryError
from ferry.infra import backup as backups
from ferry.infra.bus import open_bus
from ferry.infra.settings import Settings

EXIT_CLIENT_ERROR = 2
SECRETS_WARNING = (
    "the archive holds SECRETS (the key that decrypts every stored credential, and the work-signing "
    "key): it is mode 0600; keep it as you keep those keys"
)


def backup(dest: Path = typer.Argument(..., help="The archive to write (.tar.gz; must not exist).")) -> None:
    """Write the event stream, KV buckets, object store, database and keys to DEST (consistent)."""
    settings = Settings.from_env()

    async def run() -> backups.Summary:
        bus = await open_bus(
            settings.nats, name="ferry-backup", setup=False, settings=settings, identity="admin"
        )
        try:
            return await backups.backup(bus, settings, dest)
        finally:
            await bus.close()

    try:
        summary = asyncio.run(run())
    except FerryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR) from None
    typer.echo(f"backup written to {summary.path}")
    for stream, count in summary.messages.items():
        typer.echo(f"  {stream}: {count} messages")
    typer.echo(f"  database: {sum(summary.rows.values())} rows in {len(summary.rows)} tables")
    typer.echo(f"  keys: {', '.join(summary.keys) or 'none (FERRY_SECRET_KEY is set: keep it yourself)'}")
    typer.echo(f"warning: {SECRETS_WARNING}")


def restore(src: Path = typer.Argument(..., help="An archive written by `ferry backup`.")) -> None:
    """Restore SRC into an empty instance (fresh NATS store, empty database); start the services after."""
    settings = Settings.from_env()

    async def run() -> backups.Summary:
        bus = await open_bus(
            settings.nats, name="ferry-restore", setup=False, settings=settings, identity="admin"
        )
        try:
            return await backups.restore(bus, settings, src, replicas=settings.stream_replicas)
        finally:
            await bus.close()

    try:
        summary = asyncio.run(run())
    except FerryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR) from None
    typer.echo(f"restored from {summary.path}")
    for stream, count in summary.messages.items():
        typer.echo(f"  {stream}: {count} messages")
    typer.echo(f"  database: {sum(summary.rows.values())} rows")
    typer.echo(f"  keys restored: {', '.join(summary.keys) or 'none'} (secrets: files are mode 0600)")
    if summary.rebuilt:
        typer.echo("  the read model was rebuilt from the events")
