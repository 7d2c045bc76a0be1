"""Settings every process shares: state, NATS, `ferry up`, the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry.infra.settings.declare import parse_int, parse_path, setting


@dataclass(frozen=True)
class CoreSettings:
    # --- general
    home: Path = setting(
        "FERRY_HOME",
        None,
        "state: embedded NATS store, SQLite file, key file, builder mirrors, agent cache, logs",
        section="general",
        parse=parse_path,
        shown="`./var`",
        factory=lambda: Path("var").resolve(),
    )
    database_url: str | None = setting(
        "FERRY_DATABASE_URL",
        None,
        "the database, e.g. `postgresql://ferry@db/ferry` (psycopg 3)",
        section="general",
        secret=True,  # may hold a password
        shown="SQLite under `FERRY_HOME`",
    )
    secret_key: str | None = setting(
        "FERRY_SECRET_KEY",
        None,
        "encrypts credentials at rest; every service must share it",
        section="general",
        secret=True,
        shown="key file `FERRY_HOME/secret.key` (0600, created by `ferry up`)",
    )
    previous_secret_key: str | None = setting(
        "FERRY_PREVIOUS_SECRET_KEY",
        None,
        "the old key while `ferry secrets rotate` moves secrets to `FERRY_SECRET_KEY` "
        "(still decrypts, never encrypts; see docs/security.md)",
        section="general",
        secret=True,
    )
    log_level: str = setting("FERRY_LOG_LEVEL", "INFO", "the services' log level", section="general")
    # --- NATS
    nats_url: str | None = setting(
        "FERRY_NATS_URL",
        None,
        "NATS server(s), comma-separated for a cluster",
        section="nats",
        shown="(embedded server)",
    )
    nats_port: int = setting(
        "FERRY_NATS_PORT",
        0,
        "port of the embedded nats-server",
        section="nats",
        parse=parse_int(0),
        shown="free port",
    )
    nats_creds: Path | None = setting(
        "FERRY_NATS_CREDS",
        None,
        'this service\'s NATS credential file (`{"user", "password"}`, see `ferry.infra.natsauth`); '
        "unset, the credential in `FERRY_NATS_URL`'s userinfo, if any",
        section="nats",
        parse=parse_path,
        shown="set by `ferry up` per service",
    )
    nats_credentials_dir: Path | None = setting(
        "FERRY_NATS_CREDENTIALS_DIR",
        None,
        "every identity's credential (`<identity>.json`); `ferry up` writes them on first start and "
        "gives each service its own",
        section="nats",
        parse=parse_path,
        shown="`FERRY_HOME/nats/credentials`",
    )
    nats_ca: Path | None = setting(
        "FERRY_NATS_CA",
        None,
        "the CA that signed the NATS servers' certificates (`tls://` URLs)",
        section="nats",
        parse=parse_path,
    )
    work_signing_key: Path | None = setting(
        "FERRY_WORK_SIGNING_KEY",
        None,
        "the gateway's Ed25519 key: signs work items and release plans",
        section="nats",
        parse=parse_path,
        shown="`FERRY_HOME/keys/work-signing.key`",
    )
    work_public_key: Path | None = setting(
        "FERRY_WORK_PUBLIC_KEY",
        None,
        "what builder and agents verify work and plans with (they refuse to start without it)",
        section="nats",
        parse=parse_path,
        shown="`FERRY_HOME/keys/work-signing.pub`",
    )
    stream_replicas: int = setting(
        "FERRY_STREAM_REPLICAS",
        1,
        "replicas of ferry's streams, object store and key-value buckets (3 on a cluster)",
        section="nats",
        parse=parse_int(1),
    )
    # --- ferry up
    agents: int = setting(
        "FERRY_AGENTS",
        1,
        "agent processes `ferry up` starts (`--agents`)",
        section="local",
        parse=parse_int(1),
    )
    nats_sync: str = setting(
        "FERRY_NATS_SYNC",
        "always",
        "`always` makes the embedded server fsync every write; anything else uses JetStream's interval sync",
        section="local",
    )
    # --- CLI
    url: str = setting("FERRY_URL", "http://127.0.0.1:8000", "where the CLI finds the gateway", section="cli")
    ws_url: str = setting(
        "FERRY_WS_URL", "ws://127.0.0.1:8001", "where the CLI finds the notifier", section="cli"
    )
    token: str | None = setting(
        "FERRY_TOKEN",
        None,
        "the API token the CLI sends (`Authorization: Bearer`, and `?token=` to the notifier)",
        section="cli",
        secret=True,
    )
    user: str | None = setting(
        "FERRY_USER",
        None,
        "who the CLI says it is with auth off (`X-Ferry-User`)",
        section="cli",
        shown="the login name (`USER`)",
    )
