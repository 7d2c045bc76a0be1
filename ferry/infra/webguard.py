"""Which ``Host`` and ``Origin`` a browser-facing service answers: plain functions over settings.

A page on another site can make a browser send requests to ferry (a form post, a ``no-cors``
fetch, a WebSocket) and, by re-pointing its own DNS name at 127.0.0.1 (DNS rebinding), even
read the answers. The gateway and the notifier therefore answer only ``Host`` names on an
allow-list, refuse state changes whose ``Origin`` is not the portal's own, and refuse WebSocket
upgrades from pages elsewhere. See docs/security.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from ferry.infra.settings import Settings

ANY = "*"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # noqa: S104 - names of the wildcard bind, not a bind


def split_host(value: str) -> tuple[str, int | None]:
    """``Host``-header form (``name``, ``name:port``, ``[v6]:port``) as a lower-case name and port.

    A malformed value gives ``("", None)``, which no allow-list contains.
    """
    value = value.strip().lower()
    if not value or any(c.isspace() or c in "/\\@?#" for c in value):
        return "", None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return "", None
    name = parts.hostname or ""
    return name.rstrip("."), port


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names requests may name; None when any is allowed.

    Explicit names (``FERRY_ALLOWED_HOSTS``) add to the defaults: the bind address, localhost,
    127.0.0.1, ::1 and the public URLs' hosts. A wildcard bind with auth on and no explicit list
    allows any name (a token is needed anyway; set the list to close the door fully).
    """
    if ANY in settings.allowed_hosts:
        return None
    bind = settings.http_host.strip("[]").lower()
    if bind in WILDCARD_BINDS and settings.auth_required and not settings.allowed_hosts:
        return None
    names = {*LOCAL_NAMES, *settings.allowed_hosts}
    if bind not in WILDCARD_BINDS:
        names.add(bind)
    for url in (settings.public_url, settings.public_ws_url):
        if url:
            host = _url_host(url)
            if host:
                names.add(host)
    return frozenset(names)


def host_allowed(host_header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a request's ``Host`` names this service (any port: the portal and feed differ)."""
    if allowed is None:
        return True
    if not host_header:
        return False
    name, _ = split_host(host_header)
    return bool(name) and name in allowed


def _url_host(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        return (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL in canonical form, or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    default = 443 if scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{ipaddress.ip_address(host).compressed}]" if _is_ip(host) else f"[{host}]"
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def portal_origins(settings: Settings) -> frozenset[str]:
    """The origins the portal's pages are served from: each allowed local name on the HTTP port,
    and ``FERRY_PUBLIC_URL``'s origin. What the notifier accepts as a WebSocket ``Origin``."""
    names = allowed_hosts(settings) or frozenset(LOCAL_NAMES)
    found = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        found.add(origin_of(f"http://{shown}:{settings.http_port}"))
        found.add(origin_of(f"https://{shown}:{settings.http_port}"))
    if settings.public_url:
        found.add(origin_of(settings.public_url))
    return frozenset(o for o in found if o)


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """Whether ``Origin`` names the request's own ``Host`` (its scheme is not compared: behind a
    TLS-terminating proxy the page is https and the request reaching ferry http)."""
    if not origin or not host_header or origin == "null":
        return False
    seen = origin_of(origin)
    if seen is None:
        return False
    name, port = split_host(host_header)
    if not name:
        return False
    _, _, rest = seen.partition("://")
    seen_name, seen_port = split_host(rest)
    default = 443 if seen.startswith("https") else 80
    return seen_name == name and (seen_port or default) == (port or default)


def websocket_check(settings: Settings) -> Callable[[Mapping[str, str]], bool]:
    """For a WebSocket upgrade's headers: an allowed ``Host``, and an ``Origin`` (browsers always
    send one) that is the portal's or the feed's own. Tools that send no ``Origin`` pass."""
    allowed = allowed_hosts(settings)
    origins = portal_origins(settings)

    def check(headers: Mapping[str, str]) -> bool:
        host = headers.get("host")
        if not host_allowed(host, allowed):
            return False
        origin = headers.get("origin")
        if origin is None:
            return True
        return origin_of(origin) in origins or same_origin(origin, host)

    return check
