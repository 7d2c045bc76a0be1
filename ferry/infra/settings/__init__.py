"""Every ``FERRY_*`` setting, in one place: a field of ``Settings`` with its variable, default and help.

Fields are grouped in sections by who reads them (``SECTIONS``; declared in ``core`` and
``services``, one ``setting(...)`` each, see ``declare``). ``Settings.from_env()`` reads the
environment once; nothing else in ferry reads a ``FERRY_*`` variable. The settings tables of
``docs/operations.md`` are generated from these fields (``scripts/gen_settings_doc.py``), and a
test keeps the two equal. Secrets (``secret=True``) never appear in a ``repr``.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any

from ferry.domain.auth import auth_required
from ferry.infra.settings.core import CoreSettings
from ferry.infra.settings.declare import SECTIONS, setting
from ferry.infra.settings.services import ServiceSettings

__all__ = ["SECTIONS", "Settings", "documented", "setting", "shown_default"]


@dataclass(frozen=True)
class Settings(ServiceSettings, CoreSettings):
    """Every setting of every service (the sections' fields together)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """The settings of ``environ`` (default: this process's environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"], "")
            if raw != "":
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
        values.setdefault("agent_name", f"agent-{os.getpid()}")
        values.setdefault("user", env.get("USER") or None)
        return cls(**values)

    @property
    def auth_required(self) -> bool:
        """Whether the API, the portal and the WebSocket feed need a token.

        ``FERRY_AUTH=token`` or ``off`` decides; unset, auth is off only when the gateway binds a
        loopback address (the single-user embedded default) and on for any other bind.
        """
        return auth_required(self.auth, self.http_host)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ferry.db'}"

    @property
    def nats(self) -> str:
        if not self.nats_url:
            raise SystemExit("FERRY_NATS_URL is not set (ferry up sets it for the services it starts)")
        return self.nats_url

    @property
    def credentials_dir(self) -> Path:
        """Where every NATS identity's credential lives (``ferry up`` writes them there)."""
        return self.nats_credentials_dir or self.home / "nats" / "credentials"

    @property
    def signing_key_path(self) -> Path:
        return self.work_signing_key or self.home / "keys" / "work-signing.key"

    @property
    def public_key_path(self) -> Path:
        return self.work_public_key or self.home / "keys" / "work-signing.pub"


def documented() -> list[Field[Any]]:
    """Every setting, in the order of ``SECTIONS`` (the generated table's rows)."""
    order = list(SECTIONS)
    return sorted(fields(Settings), key=lambda f: order.index(f.metadata["section"]))


def shown_default(f: Field[Any]) -> str:
    """A field's default as the settings table says it."""
    if f.metadata["shown"] is not None:
        return str(f.metadata["shown"])
    value = f.default if f.default is not MISSING else None
    if value is None or value == "" or value == ():
        return "empty"
    return f"`{value}`"
