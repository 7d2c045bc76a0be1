"""``ferry secrets rotate``: encrypt every stored secret under a new key, on the database directly.

With the key file (no ``FERRY_SECRET_KEY``): a new key is written above the old one (both
decrypt while the rotation runs, so a crash loses nothing), every secret is re-encrypted in
one transaction, and the file then keeps only the new key. With ``FERRY_SECRET_KEY``: set the
new value there and the old one in ``FERRY_PREVIOUS_SECRET_KEY``, run this, then remove
``FERRY_PREVIOUS_SECRET_KEY`` everywhere and restart the services.
"""

from __future__ import annotations

import typer
from cryptography.fernet import Fernet

from ferry.domain.errors import FerryError
from ferry.infra.secrets import KEY_FILE, SecretBox, load_or_create_keys, write_key_file
from ferry.infra.settings import Settings

EXIT_CLIENT_ERROR = 2

app = typer.Typer(
    help="Secrets at rest (on the database directly).", no_args_is_help=True, add_completion=False
)


def _reencrypt(settings: Settings, box: SecretBox) -> int:
    from ferry.db import repo
    from ferry.db.engine import make_engine, session_factory, upgrade

    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as session, session.begin():
            session.connection(execution_options={"ferry_write": True})
            return repo.rotate_secrets(session, box) + repo.rotate_variables(session, box)
    finally:
        engine.dispose()


def rotate_secrets(settings: Settings) -> tuple[int, str]:
    """Re-encrypt every stored secret under the new key; (count, what to do next)."""
    if settings.secret_key:
        if not settings.previous_secret_key:
            raise FerryError(
                "FERRY_SECRET_KEY is set: put the new key in FERRY_SECRET_KEY and the current one in "
                "FERRY_PREVIOUS_SECRET_KEY, then run this again",
                field="secret_key",
            )
        count = _reencrypt(settings, SecretBox.from_settings(settings))
        return count, "remove FERRY_PREVIOUS_SECRET_KEY from every service's environment and restart them"
    path = settings.home / KEY_FILE
    old = load_or_create_keys(path)
    new = Fernet.generate_key()
    write_key_file(path, [new, *old])  # both open every secret while the rotation runs
    count = _reencrypt(settings, SecretBox(new, *old))
    write_key_file(path, [new])
    return count, f"{path} now holds only the new key; restart the services so they read it"


@app.command()
def rotate() -> None:
    """Re-encrypt credentials, webhook secrets and variables under a new key; the old key stops working."""
    settings = Settings.from_env()
    try:
        count, then = rotate_secrets(settings)
    except FerryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_CLIENT_ERROR) from None
    typer.echo(f"re-encrypted {count} secrets under the new key")
    typer.echo(f"next: {then}")
