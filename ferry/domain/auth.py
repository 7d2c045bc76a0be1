"""API tokens and roles, as plain functions: making a token, hashing it, and who may do what.

A token is ``fry_`` followed by 32 random bytes (urlsafe base64); only its sha256 is stored.
Roles are ordered: ``viewer`` reads; ``deployer`` also releases (create, approve, reject,
cancel, roll back); ``admin`` does everything (credentials, hosts, projects, environments,
webhooks, tokens). Webhooks and tokens are admin-only even to read: a webhook URL (Slack's,
for one) is itself a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from typing import Final

from ferry.domain.vocabulary import ROLES as ROLES
from ferry.domain.vocabulary import Role as Role

TOKEN_PREFIX: Final = "fry_"  # noqa: S105 - a marker for secret scanners, not a secret
TOKEN_BYTES: Final = 32
MIN_TOKEN_LENGTH: Final = 16
"""The shortest token ferry accepts from outside (``FERRY_BOOTSTRAP_TOKEN``, a login form)."""
MAX_TOKEN_LENGTH: Final = 256
COOKIE_NAME: Final = "ferry_token"
"""The portal's cookie (HttpOnly, SameSite=Strict); browsers send it to the notifier's port too."""
TOUCH_INTERVAL: Final = 60.0
"""Seconds between two writes of a token's ``last_used_at``."""

AUTH_MODES: Final = ("token", "off")
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC: Final = frozenset({("GET", "/openapi.json"), ("HEAD", "/openapi.json")})
_RELEASE_ACTION = re.compile(r"^/releases/[^/]+/(approve|reject|cancel|rollback|retry|resume)$")
_ADMIN_ONLY_READS = ("/tokens", "/webhooks")


def new_token() -> str:
    """A fresh API token: ``fry_`` + 32 random bytes, urlsafe base64 without padding."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The token's sha256 as 64 hex digits: what the database stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Compare two token hashes in constant time."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def plausible_token(token: str) -> bool:
    """Whether ``token`` could be a token at all (length, printable ASCII, no spaces)."""
    return (
        MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_required(mode: str | None, http_host: str) -> bool:
    """``FERRY_AUTH``: ``token`` or ``off``; unset means off on a loopback bind, token otherwise."""
    if mode is None or mode == "":
        return not is_loopback(http_host)
    if mode not in AUTH_MODES:
        raise ValueError(f"FERRY_AUTH must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
    return mode == "token"


def required_role(method: str, path: str) -> Role | None:
    """The least role that may call ``method path`` (relative to ``/api``); None when public."""
    method = method.upper()
    if (method, path) in PUBLIC:
        return None
    if any(path == p or path.startswith(p + "/") for p in _ADMIN_ONLY_READS):
        return "admin"
    if method in SAFE_METHODS:
        return "viewer"
    if method == "POST" and (path == "/releases" or _RELEASE_ACTION.match(path)):
        return "deployer"
    return "admin"


def allows(role: str, required: Role | None) -> bool:
    """Whether ``role`` is at least ``required`` (None: anyone, even without a token)."""
    if required is None:
        return True
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)
