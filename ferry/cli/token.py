"""``ferry token …``: API tokens, straight on the database (to bootstrap a gateway with auth on).

``create`` prints the token once, on its own line; only its sha256 is stored. The same
operations are ``/api/tokens`` for admins with a token already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ferry.domain import auth
from ferry.domain.errors import FerryError
from ferry.infra.settings import Settings

R = TypeVar("R")
EXIT_CLIENT_ERROR = 2

app = typer.Typer(help="API tokens (on the database directly).", no_args_is_help=True, add_completion=False)


def _run(fn: Callable[..., R], *args: Any) -> R:
    """``fn(session, *args)`` in one transaction on the configured database (migrated first)."""
    from ferry.db.engine import make_engine, session_factory, upgrade

    settings = Settings.from_env()
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as session, session.begin():
            session.connection(execution_options={"ferry_write": True})
            return fn(session, *args)
    except FerryError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        typer.echo(f"error: {exc.message}{where}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR) from None
    finally:
        engine.dispose()


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what uses it; releases record it as requested_by."),
    role: str = typer.Option(..., "--role", help="viewer, deployer or admin."),
) -> None:
    """Create a token and print it once (keep it: it cannot be shown again)."""
    from ferry.db import repo

    if role not in auth.ROLES:
        typer.echo(f"error: --role must be one of {', '.join(auth.ROLES)}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR)
    token = auth.new_token()
    info = _run(repo.create_token, name, role, auth.hash_token(token))
    typer.echo(f"created {info.role} token {info.name!r}; it is shown only now:", err=True)
    typer.echo(token)


@app.command("list")
def list_() -> None:
    """Tokens with their role and last use (never the tokens themselves)."""
    from ferry.db import repo

    infos = _run(repo.list_tokens)
    if not infos:
        typer.echo("no API tokens (ferry token create NAME --role admin)")
        return
    typer.echo(f"{'NAME':<30} {'ROLE':<9} {'CREATED':<20} LAST USED")
    for t in infos:
        used = t.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if t.last_used_at else "never"
        typer.echo(f"{t.name:<30} {t.role:<9} {t.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {used}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The token to revoke.")) -> None:
    """Delete a token: the next request that presents it is refused."""
    from ferry.db import repo

    _run(repo.revoke_token, name)
    typer.echo(f"revoked {name!r}")
