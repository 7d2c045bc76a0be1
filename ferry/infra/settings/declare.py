"""How a setting is declared and read: its variable, default, help, section and parser.

Every field of ``ferry.infra.settings.Settings`` is a ``setting(...)``; a parser turns the raw
variable (never empty) into the value or stops with ``SystemExit`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from ferry.domain.agentgroups import validate_group
from ferry.domain.auth import AUTH_MODES
from ferry.domain.errors import InvalidInput

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
def parse_int(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SystemExit(f"{name} must be at least {minimum}, got {raw!r}")
        return value

    return parse


def parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{name} must be positive, got {raw!r}")
    return value


def parse_zero_or_more(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SystemExit(f"{name} must not be negative, got {raw!r}")
    return value


def parse_str(name: str, raw: str) -> str:
    return raw


def parse_path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def parse_paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(":") if p)


def parse_names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(n.strip().lower() for n in raw.split(",") if n.strip())


def parse_delays(name: str, raw: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(d < 0 for d in delays):
        raise SystemExit(f"{name} must not be negative")
    return delays


def parse_agent_group(name: str, raw: str) -> str:
    try:
        return validate_group(raw, name)
    except InvalidInput as exc:
        raise SystemExit(f"{exc.message}, got {raw!r}") from None


def parse_auth_mode(name: str, raw: str) -> str | None:
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
    parse: Callable[[str, str], Any] = parse_str,
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
