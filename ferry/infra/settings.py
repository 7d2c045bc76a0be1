"""Every ``FERRY_*`` setting, in one place: a field of ``Settings`` with its variable, default and help.

Fields are grouped in sections by who reads them (``SECTIONS``). ``Settings.from_env()`` reads
the environment once; nothing else in ferry reads a ``FERRY_*`` variable. The settings table of
``docs/operations.md`` is generated from these fields (``scripts/gen_settings_doc.py``), and a
test keeps the two equal. Secrets (``secret=True``) never appear in a ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from ferry.domain.agentgroups import DEFAULT_GROUP, validate_group
from ferry.domain.auth import AUTH_MODES, auth_required
from ferry.domain.errors import InvalidInput
from ferry.domain.webhooks import RETRY_DELAYS

SECTIONS = {
    "general": "Every service",
    "nats": "NATS and JetStream (every service)",
    "gateway": "Gateway (API, portal, projector, orchestrator)",
    "builder": "Builder",
    "agent": "Agents",
    "workers": "Builder and agents",
    "notifier": "Notifier (WebSocket feed and webhooks)",
    "local": "`ferry up` (the embedded platform)",
    "cli": "The `ferry` CLI (a client of the gateway and the notifier)",
}


# --- parsers: the raw variable (never empty) -> the field's value; SystemExit says what is wrong
def _int(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SystemExit(f"{name} must be at least {minimum}, got {raw!r}")
        return value

    return parse


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{name} must be positive, got {raw!r}")
    return value


def _zero_or_more(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SystemExit(f"{name} must not be negative, got {raw!r}")
    return value


def _str(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(":") if p)


def _names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(n.strip().lower() for n in raw.split(",") if n.strip())


def _delays(name: str, raw: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(d < 0 for d in delays):
        raise SystemExit(f"{name} must not be negative")
    return delays


def _agent_group(name: str, raw: str) -> str:
    try:
        return validate_group(raw, name)
    except InvalidInput as exc:
        raise SystemExit(f"{exc.message}, got {raw!r}") from None


def _auth_mode(name: str, raw: str) -> str | None:
    mode = raw.strip().lower()
    if not mode:
        return None
    if mode not in AUTH_MODES:
        raise SystemExit(f"{name} must be one of {', '.join(AUTH_MODES)}, got {raw!r}")
    return mode


def setting(
    env: str,
    default: Any,
    help: str,
    *,
    section: str,
    parse: Callable[[str, str], Any] = _str,
    secret: bool = False,
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A field read from ``env``: unset or empty keeps ``default``; ``shown`` is the default as
    the docs say it, when the value alone would not (a path under ``FERRY_HOME``...)."""
    assert section in SECTIONS, section
    meta = {"env": env, "help": help, "section": section, "parse": parse, "secret": secret, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


@dataclass(frozen=True)
class Settings:
    # --- general
    home: Path = setting(
        "FERRY_HOME",
        None,
        "state: embedded NATS store, SQLite file, key file, builder mirrors, agent cache, logs",
        section="general",
        parse=_path,
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
        parse=_int(0),
        shown="free port",
    )
    nats_creds: Path | None = setting(
        "FERRY_NATS_CREDS",
        None,
        'this service\'s NATS credential file (`{"user", "password"}`, see `ferry.infra.natsauth`); '
        "unset, the credential in `FERRY_NATS_URL`'s userinfo, if any",
        section="nats",
        parse=_path,
        shown="set by `ferry up` per service",
    )
    nats_credentials_dir: Path | None = setting(
        "FERRY_NATS_CREDENTIALS_DIR",
        None,
        "every identity's credential (`<identity>.json`); `ferry up` writes them on first start and "
        "gives each service its own",
        section="nats",
        parse=_path,
        shown="`FERRY_HOME/nats/credentials`",
    )
    nats_ca: Path | None = setting(
        "FERRY_NATS_CA",
        None,
        "the CA that signed the NATS servers' certificates (`tls://` URLs)",
        section="nats",
        parse=_path,
    )
    work_signing_key: Path | None = setting(
        "FERRY_WORK_SIGNING_KEY",
        None,
        "the gateway's Ed25519 key: signs work items and release plans",
        section="nats",
        parse=_path,
        shown="`FERRY_HOME/keys/work-signing.key`",
    )
    work_public_key: Path | None = setting(
        "FERRY_WORK_PUBLIC_KEY",
        None,
        "what builder and agents verify work and plans with (they refuse to start without it)",
        section="nats",
        parse=_path,
        shown="`FERRY_HOME/keys/work-signing.pub`",
    )
    stream_replicas: int = setting(
        "FERRY_STREAM_REPLICAS",
        1,
        "replicas of ferry's streams, object store and key-value buckets (3 on a cluster)",
        section="nats",
        parse=_int(1),
    )
    # --- gateway
    http_host: str = setting(
        "FERRY_HTTP_HOST", "127.0.0.1", "the gateway's (and the notifier's) bind address", section="gateway"
    )
    http_port: int = setting("FERRY_HTTP_PORT", 8000, "the gateway's port", section="gateway", parse=_int(0))
    public_url: str | None = setting(
        "FERRY_PUBLIC_URL",
        None,
        "the portal's address as browsers see it (allowed `Host` and `Origin`, links in webhook messages)",
        section="gateway",
    )
    public_ws_url: str | None = setting(
        "FERRY_PUBLIC_WS_URL",
        None,
        "the WebSocket base URL the portal uses, behind a proxy",
        section="gateway",
        shown="`ws://<host>:<FERRY_WS_PORT>`",
    )
    allowed_hosts: tuple[str, ...] = setting(
        "FERRY_ALLOWED_HOSTS",
        (),
        "more `Host` names the gateway and notifier answer (comma-separated, `*` for any); "
        "others get 421 (DNS rebinding)",
        section="gateway",
        parse=_names,
        shown="bind address, `localhost`, `127.0.0.1`, `::1`, the `FERRY_PUBLIC_URL` host",
    )
    max_body: int = setting(
        "FERRY_MAX_BODY",
        1024 * 1024,
        "largest request body in bytes (413 beyond)",
        section="gateway",
        parse=_int(1024),
    )
    auth: str | None = setting(
        "FERRY_AUTH",
        None,
        "`token` requires an API token on the API, the portal and the WebSocket feed; `off` trusts "
        "every caller",
        section="gateway",
        parse=_auth_mode,
        shown="`off` on a loopback `FERRY_HTTP_HOST`, else `token`",
    )
    bootstrap_token: str | None = setting(
        "FERRY_BOOTSTRAP_TOKEN",
        None,
        "on first start (no admin token yet), the gateway makes an admin token named `bootstrap` "
        "with this value; once revoked it is not made again",
        section="gateway",
        secret=True,
    )
    gojs_license_key: str = setting(
        "FERRY_GOJS_LICENSE_KEY",
        "",
        "sets `go.Diagram.licenseKey`; without it GoJS shows its evaluation notice",
        section="gateway",
    )
    # garbage collection and retention (ferry.infra.gc, ferry.infra.retention; docs/operations.md)
    gc_interval: float = setting(
        "FERRY_GC_INTERVAL",
        3600.0,
        "seconds between garbage-collection passes: the gateway's, and each agent's sweep of its local "
        "artifact cache (0: only `ferry gc` / `POST /api/gc`)",
        section="gateway",
        parse=_zero_or_more,
    )
    gc_grace: float = setting(
        "FERRY_GC_GRACE",
        3600.0,
        "an unneeded artifact younger than this (seconds) is left for a later pass",
        section="gateway",
        parse=_zero_or_more,
    )
    history_retention_days: float = setting(
        "FERRY_HISTORY_RETENTION_DAYS",
        0.0,
        "move the events and logs of releases that ended this many days ago and are not kept to "
        "`FERRY_HISTORY_ARCHIVE_DIR` (0: keep all history)",
        section="gateway",
        parse=_zero_or_more,
    )
    history_archive_dir: Path | None = setting(
        "FERRY_HISTORY_ARCHIVE_DIR",
        None,
        "where retention writes archived history; required with `FERRY_HISTORY_RETENTION_DAYS`",
        section="gateway",
        parse=_path,
    )
    # --- builder
    hook_sandbox: str = setting(
        "FERRY_HOOK_SANDBOX",
        "bwrap",
        "`bwrap` runs build hooks in bubblewrap as the hook user; `off` runs them unsandboxed as the "
        "builder's own user (logged as a warning)",
        section="builder",
    )
    hook_user: str = setting(
        "FERRY_HOOK_USER", "ferry-hook", "the unprivileged user build hooks run as", section="builder"
    )
    hook_bind_ro: tuple[Path, ...] = setting(
        "FERRY_HOOK_BIND_RO",
        (),
        "more read-only directories for build hooks (colon-separated); ferry's own files stay hidden",
        section="builder",
        parse=_paths,
    )
    hook_log_limit: int = setting(
        "FERRY_HOOK_LOG_LIMIT",
        8 * 1024 * 1024,
        "bytes of a build's hook output kept in its log",
        section="builder",
        parse=_int(1),
    )
    hook_max_file_size: int = setting(
        "FERRY_HOOK_MAX_FILE_SIZE",
        2 * 1024 * 1024 * 1024,
        "largest file a build hook may write, in bytes",
        section="builder",
        parse=_int(1),
    )
    builder_gc_interval: float = setting(
        "FERRY_BUILDER_GC_INTERVAL",
        3600.0,
        "seconds between the builder's sweeps of left-over build directories and unused mirrors (0: never)",
        section="builder",
        parse=_zero_or_more,
    )
    builder_work_max_age: float = setting(
        "FERRY_BUILDER_WORK_MAX_AGE",
        86400.0,
        "seconds after which a build directory a killed builder left is removed",
        section="builder",
        parse=_zero_or_more,
    )
    mirror_max_age_days: float = setting(
        "FERRY_MIRROR_MAX_AGE_DAYS",
        30.0,
        "a mirror not fetched for this many days whose repository no project uses any more is removed",
        section="builder",
        parse=_zero_or_more,
    )
    # --- agents
    agent_name: str = setting(
        "FERRY_AGENT_NAME", "", "an agent's name in events", section="agent", shown="`agent-<pid>`"
    )
    agent_group: str = setting(
        "FERRY_AGENT_GROUP",
        DEFAULT_GROUP,
        "the agent serves only hosts whose `agent_group` is this (1-50 of `a-z 0-9 _ -`); "
        "see [Agent groups](#agent-groups)",
        section="agent",
        parse=_agent_group,
    )
    agent_concurrency: int = setting(
        "FERRY_AGENT_CONCURRENCY",
        32,
        "hosts one agent process works on at once (each blocks a thread on SSH, not the CPU; the "
        "environment's `concurrency` caps how many run)",
        section="agent",
        parse=_int(1),
    )
    # --- builder and agents
    work_ack_wait: float = setting(
        "FERRY_WORK_ACK_WAIT",
        10.0,
        "seconds before the item of a worker that stopped answering is redelivered (a live worker "
        "sends progress every 3 s, or every third of a shorter wait, so its long steps are never "
        "taken over)",
        section="workers",
        parse=_float,
    )
    # --- metrics and traces (docs/operations.md, "Metrics and traces")
    builder_metrics_port: int = setting(
        "FERRY_BUILDER_METRICS_PORT",
        0,
        "the builder's Prometheus `/metrics` port (0: none; the gateway and notifier serve theirs on "
        "their own HTTP port)",
        section="builder",
        parse=_int(0),
    )
    agent_metrics_port: int = setting(
        "FERRY_AGENT_METRICS_PORT",
        0,
        "an agent's Prometheus `/metrics` port (0: none; one port per agent process)",
        section="agent",
        parse=_int(0),
    )
    metrics_host: str = setting(
        "FERRY_METRICS_HOST",
        "127.0.0.1",
        "the address the builder's and agents' metrics ports bind",
        section="workers",
    )
    traces_dir: Path | None = setting(
        "FERRY_TRACES_DIR",
        None,
        "write every finished trace span as a JSON line to `<dir>/<service>-<pid>.jsonl` (OTLP: "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` with an OTLP exporter package installed)",
        section="general",
        parse=_path,
    )
    # --- notifier
    ws_port: int = setting("FERRY_WS_PORT", 8001, "the notifier's port", section="notifier", parse=_int(0))
    ws_token: str | None = setting(
        "FERRY_WS_TOKEN",
        None,
        "when set, WebSocket clients must pass `?token=` (an API token also works when auth is on); "
        "the CLI sends it to the notifier",
        section="notifier",
        secret=True,
    )
    ws_heartbeat: float = setting(
        "FERRY_WS_HEARTBEAT",
        15.0,
        "seconds without an event before a client gets a heartbeat frame",
        section="notifier",
        parse=_float,
    )
    ws_queue: int = setting(
        "FERRY_WS_QUEUE",
        1000,
        "frames queued for one slow client before it is told to resync",
        section="notifier",
        parse=_int(1),
    )
    ws_ring: int = setting(
        "FERRY_WS_RING",
        4096,
        "recent events kept in memory for clients that reconnect",
        section="notifier",
        parse=_int(1),
    )
    webhook_retry_delays: tuple[float, ...] = setting(
        "FERRY_WEBHOOK_RETRY_DELAYS",
        RETRY_DELAYS,
        "seconds before each webhook retry (attempts = count + 1)",
        section="notifier",
        parse=_delays,
        shown="`" + ",".join(f"{d:g}" for d in RETRY_DELAYS) + "`",
    )
    webhook_timeout: float = setting(
        "FERRY_WEBHOOK_TIMEOUT", 10.0, "seconds per webhook POST", section="notifier", parse=_float
    )
    webhook_concurrency: int = setting(
        "FERRY_WEBHOOK_CONCURRENCY",
        16,
        "webhook posts in flight per notifier",
        section="notifier",
        parse=_int(1),
    )
    # --- ferry up
    agents: int = setting(
        "FERRY_AGENTS", 1, "agent processes `ferry up` starts (`--agents`)", section="local", parse=_int(1)
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
