"""Read access to stored credentials, secret variables and host connection details for workers.

Secrets are decrypted only in memory, only when a worker needs them, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.db.models import Credential, Host
from ferry.domain.errors import NotFound
from ferry.infra.secrets import SecretBox
from ferry.infra.settings import Settings


class Secret(str):
    """A decrypted credential's text that knows its kind (``ssh_key`` or ``password``).

    A ``str``, so code that only needs the text keeps working; its repr never shows the text.
    """

    kind: str

    def __new__(cls, text: str, kind: str) -> Secret:
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj

    def __repr__(self) -> str:
        return f"Secret(kind={self.kind!r}, text=***)"


@dataclass(frozen=True)
class HostAccess:
    name: str
    address: str
    port: int
    user: str
    private_key: str | None
    password: str | None
    host_key: str | None
    trust_on_first_use: bool


class CredentialReader:
    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings.db_url)
        self.sessions = session_factory(self.engine)
        self.box = SecretBox.from_settings(settings)

    def secret(self, name: str) -> Secret:
        """The credential ``name``'s secret, decrypted, with its kind."""
        with self.sessions() as session:
            credential = session.scalars(select(Credential).where(Credential.name == name)).first()
            if credential is None:
                raise NotFound(f"credential {name!r} does not exist", field="credential")
            return Secret(self.box.decrypt(credential.secret), credential.kind)

    def variables(self, project: str) -> dict[str, str]:
        """The project's secret variables, decrypted (none for a project that no longer exists)."""
        with self.sessions() as session:
            return repo.load_variables(session, self.box, project)

    def host(self, name: str) -> HostAccess:
        with self.sessions() as session:
            host = session.scalars(select(Host).where(Host.name == name)).first()
            if host is None:
                raise NotFound(f"host {name!r} is not registered", field="host")
            key = password = None
            if host.credential is not None:
                plain = self.box.decrypt(host.credential.secret)
                if host.credential.kind == "ssh_key":
                    key = plain
                else:
                    password = plain
            return HostAccess(
                host.name,
                host.address,
                host.port,
                host.user,
                key,
                password,
                host.host_key,
                host.host_key_policy == "tofu",
            )

    def record_host_key(self, name: str, key_line: str) -> None:
        """Trust on first use: pin the key a host presented (only under policy ``tofu``)."""
        with self.sessions.begin() as session:
            repo.record_host_key(session, name, key_line)

    def close(self) -> None:
        self.engine.dispose()
