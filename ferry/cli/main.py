"""The ``ferry`` command line: run the platform, manage its database, and drive releases."""

from __future__ import annotations

import asyncio
import sys

import typer

from ferry.infra.settings import Settings

app = typer.Typer(
    help="ferry: releases from git to SSH hosts, event-sourced.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="The SQL read model.", no_args_is_help=True)
projections_app = typer.Typer(help="Projections of the event stream.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(projections_app, name="projections")


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also start a local sshd target and a demo project."),
    agents: int = typer.Option(
        1, "--agents", envvar="FERRY_AGENTS", min=1, max=64, help="Agent processes to run (a consumer group)."
    ),
) -> None:
    """Run nats-server (unless FERRY_NATS_URL), migrate, and start every service; Ctrl-C stops all."""
    from ferry.infra import logs
    from ferry.local.launcher import Launcher, LaunchError

    settings = Settings.from_env()
    logs.configure("launcher", settings.log_level)
    launcher = Launcher(settings, demo=demo, agents=agents, echo=typer.echo)
    try:
        url = launcher.start()
        if demo:
            from ferry.local.demo import setup_demo

            lines, stop_demo = setup_demo(settings, url)
            launcher.on_stop.append(stop_demo)
            for line in lines:
                typer.echo(line)
    except (LaunchError, Exception) as exc:
        launcher.stop()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"portal: {url}")
    sys.stdout.flush()
    raise typer.Exit(launcher.serve_forever())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (alembic) up to the latest."""
    from ferry.db.engine import upgrade

    settings = Settings.from_env()
    upgrade(settings.db_url)
    typer.echo(f"database at head: {settings.db_url.split('@')[-1]}")


@projections_app.command("rebuild")
def projections_rebuild() -> None:
    """Drop the release read model and replay it from the event stream."""
    from ferry.db.engine import make_engine, session_factory, upgrade
    from ferry.infra.bus import open_bus
    from ferry.infra.projector import rebuild

    settings = Settings.from_env()
    upgrade(settings.db_url)

    async def run() -> int:
        bus = await open_bus(settings.nats, name="ferry-cli")
        engine = make_engine(settings.db_url)
        try:
            return await rebuild(bus, session_factory(engine))
        finally:
            await bus.close()
            engine.dispose()

    count = asyncio.run(run())
    typer.echo(f"replayed {count} events")


def _register_release_commands() -> None:
    from ferry.cli import release as cli_release

    app.add_typer(cli_release.app, name="release")


_register_release_commands()


def _register_token_commands() -> None:
    from ferry.cli import token as cli_token

    app.add_typer(cli_token.app, name="token")


_register_token_commands()


def _register_secrets_commands() -> None:
    from ferry.cli import secrets as cli_secrets

    app.add_typer(cli_secrets.app, name="secrets")


_register_secrets_commands()


def _register_variables_commands() -> None:
    from ferry.cli import variables as cli_variables

    app.add_typer(cli_variables.app, name="variables")


_register_variables_commands()


def _register_doctor_command() -> None:
    from ferry.cli import doctor as cli_doctor

    app.command("doctor")(cli_doctor.doctor)


_register_doctor_command()


def _register_gc_and_backup_commands() -> None:
    from ferry.cli import backup as cli_backup
    from ferry.cli import gc as cli_gc

    app.command("gc")(cli_gc.gc)
    app.command("backup")(cli_backup.backup)
    app.command("restore")(cli_backup.restore)


_register_gc_and_backup_commands()


def main() -> None:
    app()
