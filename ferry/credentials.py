"""Read access to stored credentials for workers (decrypted only in memory, only when needed)."""

from __future__ import annotations

from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.secrets import SecretBox
from ferry.settings import Settings


class CredentialReader:
    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings.db_url)
        self.sessions = session_factory(self.engine)
        self.box = SecretBox.from_settings(settings)

    def secret(self, name: str) -> str:
        with self.sessions() as session:
            return repo.load_secret(session, self.box, name)

    def close(self) -> None:
        self.engine.dispose()
