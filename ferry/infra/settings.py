"""Settings from the environment (FERRY_*), with embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ferry.domain.agentgroups import DEFAULT_GROUP, validate_group
from ferry.domain.auth import AUTH_MODES, auth_required
from ferry.domain.errors import InvalidInput


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _path(raw: str | None) -> Path | None:
    return Path(raw).expanduser().resolve() if raw else None


def _agent_group(raw: str | None) -> str:
    try:
        return validate_group(raw or DEFAULT_GROUP, "FERRY_AGENT_GROUP")
    except InvalidInput as exc:
        raise SystemExit(f"{exc.message}, got {raw!r}") from None


def _auth_mode(raw: str | None) -> str | None:
    mode = (raw or "").strip().lower()
    if not mode:
        return None
    if mode not in AUTH_MODES:
        raise SystemExit(f"FERRY_AUTH must be one of {', '.join(AUTH_MODES)}, got {raw!r}")
    return mode


def _names(raw: str | None) -> tuple[str, ...]:
    return tuple(n.strip().lower() for n in (raw or "").split(",") if n.strip())


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path("var").resolve())
    nats_url: str | None = None
    nats_port: int = 0
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    ws_port: int = 8001
    public_ws_url: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    previous_secret_key: str | None = field(default=None, repr=False)
    """``FERRY_PREVIOUS_SECRET_KEY``: still decrypts (never encrypts) while ``ferry secrets rotate``
    moves every stored secret to ``FERRY_SECRET_KEY``; remove it once the rotation is done."""
    gojs_license_key: str = ""
    agent_name: str = ""
    agent_group: str = DEFAULT_GROUP
    agent_concurrency: int = 32
    """Hosts one agent process works on at once (``FERRY_AGENT_CONCURRENCY``): host work waits on
    SSH, not the CPU, so one process serves an environment's whole ``concurrency``."""
    """``FERRY_AGENT_GROUP``: the agent serves only the hosts of this group."""
    log_level: str = "INFO"
    auth: str | None = None
    """``FERRY_AUTH``: ``token`` or ``off``; None decides by the bind address (see ``auth_required``)."""
    bootstrap_token: str | None = field(default=None, repr=False)
    nats_creds: Path | None = None
    """``FERRY_NATS_CREDS``: this service's NATS credential file (``{"user", "password"}``, see
    ``ferry.infra.natsauth``); unset, the credential in ``FERRY_NATS_URL``'s userinfo, if any."""
    nats_credentials_dir: Path | None = None
    """``FERRY_NATS_CREDENTIALS_DIR``: every identity's credential (``<identity>.json``), from which
    ``ferry up`` gives each service its own; default ``FERRY_HOME/nats/credentials``."""
    work_signing_key: Path | None = None
    """``FERRY_WORK_SIGNING_KEY``: the gateway's Ed25519 key; default ``FERRY_HOME/keys/work-signing.key``."""
    work_public_key: Path | None = None
    """``FERRY_WORK_PUBLIC_KEY``: what builder and agents verify work with; default
    ``FERRY_HOME/keys/work-signing.pub``."""
    nats_ca: Path | None = None
    """``FERRY_NATS_CA``: the CA that signed the NATS servers' certificates (``tls://`` URLs)."""
    public_url: str | None = None
    """``FERRY_PUBLIC_URL``: the portal's address as browsers reach it (links, the Host allow-list)."""
    allowed_hosts: tuple[str, ...] = ()
    """``FERRY_ALLOWED_HOSTS`` (comma-separated; ``*`` allows any): the ``Host`` names the gateway
    and notifier answer, besides the bind address, localhost and ``public_url``'s host."""
    max_body: int = 1024 * 1024
    """``FERRY_MAX_BODY``: the largest request body the gateway reads, in bytes."""

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("FERRY_HOME") or "var").resolve()
        return cls(
            home=home,
            nats_url=os.environ.get("FERRY_NATS_URL") or None,
            nats_port=_int("FERRY_NATS_PORT", 0),
            database_url=os.environ.get("FERRY_DATABASE_URL") or None,
            http_host=os.environ.get("FERRY_HTTP_HOST") or "127.0.0.1",
            http_port=_int("FERRY_HTTP_PORT", 8000),
            ws_port=_int("FERRY_WS_PORT", 8001),
            public_ws_url=os.environ.get("FERRY_PUBLIC_WS_URL") or None,
            secret_key=os.environ.get("FERRY_SECRET_KEY") or None,
            previous_secret_key=os.environ.get("FERRY_PREVIOUS_SECRET_KEY") or None,
            gojs_license_key=os.environ.get("FERRY_GOJS_LICENSE_KEY", ""),
            agent_name=os.environ.get("FERRY_AGENT_NAME") or f"agent-{os.getpid()}",
            agent_group=_agent_group(os.environ.get("FERRY_AGENT_GROUP")),
            agent_concurrency=max(1, _int("FERRY_AGENT_CONCURRENCY", 32)),
            log_level=os.environ.get("FERRY_LOG_LEVEL", "INFO"),
            auth=_auth_mode(os.environ.get("FERRY_AUTH")),
            bootstrap_token=os.environ.get("FERRY_BOOTSTRAP_TOKEN") or None,
            nats_creds=_path(os.environ.get("FERRY_NATS_CREDS")),
            nats_credentials_dir=_path(os.environ.get("FERRY_NATS_CREDENTIALS_DIR")),
            work_signing_key=_path(os.environ.get("FERRY_WORK_SIGNING_KEY")),
            work_public_key=_path(os.environ.get("FERRY_WORK_PUBLIC_KEY")),
            nats_ca=_path(os.environ.get("FERRY_NATS_CA")),
            public_url=os.environ.get("FERRY_PUBLIC_URL") or None,
            allowed_hosts=_names(os.environ.get("FERRY_ALLOWED_HOSTS")),
            max_body=max(1024, _int("FERRY_MAX_BODY", 1024 * 1024)),
        )

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
