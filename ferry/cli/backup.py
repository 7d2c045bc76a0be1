"""``ferry backup DEST`` and ``ferry restore SRC``: local admin commands on NATS and the database.

Like ``ferry secrets rotate`` they run on the machine (or with the settings) of the instance:
FERRY_NATS_URL (an identity that may read and create every stream: ``admin``), FERRY_DATABASE_URL
and FERRY_HOME (the key files). The archive holds the secret key and the work-signing key.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from ferry.domain.errors import FerryError
from ferry.infra import backup as backups
from ferry.infra.bus import Bus, open_bus
from ferry.infra.settings import Settings

EXIT_CLIENT_ERROR = 2
SECRETS_WARNING = (
    "the archive holds SECRETS (the key that decrypts every stored credential, and the work-signing "
    "key): it is mode 0600; keep it as you keep those keys"
)


async def _close(bus: Bus) -> None:
    """Closing is no loss of NATS: keep the bus's "lost NATS; reconnecting" out of the output."""
    logger = logging.getLogger("ferry.infra.bus")
    logger.addFilter(_silent)
    try:
        await bus.close()
    finally:
        logger.removeFilter(_silent)


def _silent(_record: logging.LogRecord) -> bool:
    return False


def backup(dest: Path = typer.Argument(..., help="The archive to write (.tar.gz; must not exist).")) -> None:
    """Write the event stream, KV buckets, object store, database and keys to DEST (consistent)."""
    settings = Settings.from_env()
    dest = dest.expanduser().resolve()

    async def run() -> backups.Summary:
        bus = await open_bus(
            settings.nats, name="ferry-backup", setup=False, settings=settings, identity="admin"
        )
        try:
            return await backups.backup(bus, settings, dest)
        finally:
            await _close(bus)

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
    """Restore SRC into an empty instance (fresh NATS store, empty database); start the services after.

    Without FERRY_NATS_URL it restores into the embedded store of FERRY_HOME, which it runs for the
    time being as `ferry up` would (then start `ferry up`)."""
    settings = Settings.from_env()
    src = src.expanduser().resolve()
    embedded = None
    if not settings.nats_url:
        from ferry.local.natsserver import NatsServer

        embedded = NatsServer(
            settings.home / "nats",
            port=settings.nats_port,
            sync_always=settings.nats_sync == "always",
            credentials_dir=settings.credentials_dir,
        )
        embedded.start()
        typer.echo(f"restoring into the embedded NATS store {settings.home / 'nats'}")
    url = embedded.url if embedded is not None else settings.nats

    async def run() -> backups.Summary:
        bus = await open_bus(url, name="ferry-restore", setup=False, settings=settings, identity="admin")
        try:
            return await backups.restore(bus, settings, src, replicas=settings.stream_replicas)
        finally:
            await _close(bus)

    try:
        summary = asyncio.run(run())
    except FerryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR) from None
    finally:
        if embedded is not None:
            embedded.stop()
    typer.echo(f"restored from {summary.path}")
    for stream, count in summary.messages.items():
        typer.echo(f"  {stream}: {count} messages")
    typer.echo(f"  database: {sum(summary.rows.values())} rows")
    typer.echo(f"  keys restored: {', '.join(summary.keys) or 'none'} (secrets: files are mode 0600)")
    if summary.rebuilt:
        typer.echo("  the read model was rebuilt from the events")
