"""Settings of one service each: gateway, builder, agents, notifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry.domain.agentgroups import DEFAULT_GROUP
from ferry.domain.webhooks import RETRY_DELAYS
from ferry.infra.settings.declare import (
    parse_agent_group,
    parse_auth_mode,
    parse_delays,
    parse_float,
    parse_int,
    parse_names,
    parse_path,
    parse_paths,
    parse_zero_or_more,
    setting,
)


@dataclass(frozen=True)
class ServiceSettings:
    # --- gateway
    http_host: str = setting(
        "FERRY_HTTP_HOST", "127.0.0.1", "the gateway's (and the notifier's) bind address", section="gateway"
    )
    http_port: int = setting(
        "FERRY_HTTP_PORT", 8000, "the gateway's port", section="gateway", parse=parse_int(0)
    )
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
        parse=parse_names,
        shown="bind address, `localhost`, `127.0.0.1`, `::1`, the `FERRY_PUBLIC_URL` host",
    )
    max_body: int = setting(
        "FERRY_MAX_BODY",
        1024 * 1024,
        "largest request body in bytes (413 beyond)",
        section="gateway",
        parse=parse_int(1024),
    )
    auth: str | None = setting(
        "FERRY_AUTH",
        None,
        "`token` requires an API token on the API, the portal and the WebSocket feed; `off` trusts "
        "every caller",
        section="gateway",
        parse=parse_auth_mode,
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
        parse=parse_zero_or_more,
    )
    gc_grace: float = setting(
        "FERRY_GC_GRACE",
        3600.0,
        "an unneeded artifact younger than this (seconds) is left for a later pass",
        section="gateway",
        parse=parse_zero_or_more,
    )
    history_retention_days: float = setting(
        "FERRY_HISTORY_RETENTION_DAYS",
        0.0,
        "move the events and logs of releases that ended this many days ago and are not kept to "
        "`FERRY_HISTORY_ARCHIVE_DIR` (0: keep all history)",
        section="gateway",
        parse=parse_zero_or_more,
    )
    history_archive_dir: Path | None = setting(
        "FERRY_HISTORY_ARCHIVE_DIR",
        None,
        "where retention writes archived history; required with `FERRY_HISTORY_RETENTION_DAYS`",
        section="gateway",
        parse=parse_path,
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
        parse=parse_paths,
    )
    hook_log_limit: int = setting(
        "FERRY_HOOK_LOG_LIMIT",
        8 * 1024 * 1024,
        "bytes of a build's hook output kept in its log",
        section="builder",
        parse=parse_int(1),
    )
    hook_max_file_size: int = setting(
        "FERRY_HOOK_MAX_FILE_SIZE",
        2 * 1024 * 1024 * 1024,
        "largest file a build hook may write, in bytes",
        section="builder",
        parse=parse_int(1),
    )
    builder_gc_interval: float = setting(
        "FERRY_BUILDER_GC_INTERVAL",
        3600.0,
        "seconds between the builder's sweeps of left-over build directories and unused mirrors (0: never)",
        section="builder",
        parse=parse_zero_or_more,
    )
    builder_work_max_age: float = setting(
        "FERRY_BUILDER_WORK_MAX_AGE",
        86400.0,
        "seconds after which a build directory a killed builder left is removed",
        section="builder",
        parse=parse_zero_or_more,
    )
    mirror_max_age_days: float = setting(
        "FERRY_MIRROR_MAX_AGE_DAYS",
        30.0,
        "a mirror not fetched for this many days whose repository no project uses any more is removed",
        section="builder",
        parse=parse_zero_or_more,
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
        parse=parse_agent_group,
    )
    agent_concurrency: int = setting(
        "FERRY_AGENT_CONCURRENCY",
        32,
        "hosts one agent process works on at once (each blocks a thread on SSH, not the CPU; the "
        "environment's `concurrency` caps how many run)",
        section="agent",
        parse=parse_int(1),
    )
    # --- builder and agents
    work_ack_wait: float = setting(
        "FERRY_WORK_ACK_WAIT",
        10.0,
        "seconds before the item of a worker that stopped answering is redelivered (a live worker "
        "sends progress every 3 s, or every third of a shorter wait, so its long steps are never "
        "taken over)",
        section="workers",
        parse=parse_float,
    )
    # --- metrics and traces (docs/operations.md, "Metrics and traces")
    builder_metrics_port: int = setting(
        "FERRY_BUILDER_METRICS_PORT",
        0,
        "the builder's Prometheus `/metrics` port (0: none; the gateway and notifier serve theirs on "
        "their own HTTP port)",
        section="builder",
        parse=parse_int(0),
    )
    agent_metrics_port: int = setting(
        "FERRY_AGENT_METRICS_PORT",
        0,
        "an agent's Prometheus `/metrics` port (0: none; one port per agent process)",
        section="agent",
        parse=parse_int(0),
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
        parse=parse_path,
    )
    # --- notifier
    ws_port: int = setting(
        "FERRY_WS_PORT", 8001, "the notifier's port", section="notifier", parse=parse_int(0)
    )
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
        parse=parse_float,
    )
    ws_queue: int = setting(
        "FERRY_WS_QUEUE",
        1000,
        "frames queued for one slow client before it is told to resync",
        section="notifier",
        parse=parse_int(1),
    )
    ws_ring: int = setting(
        "FERRY_WS_RING",
        4096,
        "recent events kept in memory for clients that reconnect",
        section="notifier",
        parse=parse_int(1),
    )
    webhook_retry_delays: tuple[float, ...] = setting(
        "FERRY_WEBHOOK_RETRY_DELAYS",
        RETRY_DELAYS,
        "seconds before each webhook retry (attempts = count + 1)",
        section="notifier",
        parse=parse_delays,
        shown="`" + ",".join(f"{d:g}" for d in RETRY_DELAYS) + "`",
    )
    webhook_timeout: float = setting(
        "FERRY_WEBHOOK_TIMEOUT", 10.0, "seconds per webhook POST", section="notifier", parse=parse_float
    )
    webhook_concurrency: int = setting(
        "FERRY_WEBHOOK_CONCURRENCY",
        16,
        "webhook posts in flight per notifier",
        section="notifier",
        parse=parse_int(1),
    )
