"""Authentication at the gateway's edge: API tokens on ``/api``, the portal's cookie, the CSRF check.

With auth on (``Settings.auth_required``) every ``/api`` request but the OpenAPI document needs
``Authorization: Bearer <token>`` or the portal's cookie, and a role that allows it
(``ferry.domain.auth.required_role``). A cookie cannot be chosen by the page that sends it, so an
unsafe request carried by the cookie must come from the gateway's own origin. Portal pages
without a token redirect to ``/login``. The caller is ``request.state.principal``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ferry.domain import auth
from ferry.domain.errors import FerryError
from ferry.infra.tokens import TokenChecker
from services.gateway.errors import Forbidden, Unauthenticated, error_body, status_of

log = logging.getLogger("ferry.gateway")

COOKIE = auth.COOKIE_NAME
COOKIE_MAX_AGE = 7 * 24 * 3600
LOGIN_PATH = "/login"
# Reachable without a token: the login page itself, health, and the portal's static files.
OPEN_PATHS = frozenset({"/healthz", LOGIN_PATH, "/logout", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role, and how the token came."""

    name: str
    role: str
    via: Literal["bearer", "cookie"]


def principal(conn: HTTPConnection) -> Principal | None:
    """The authenticated caller of this request, or None (auth off, or an open path)."""
    found = conn.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


def presented_token(conn: HTTPConnection) -> tuple[str | None, Literal["bearer", "cookie"]]:
    """The bearer token if there is one, else the portal's cookie."""
    token = auth.bearer(conn.headers.get("authorization"))
    if token is not None:
        return token, "bearer"
    return conn.cookies.get(COOKIE) or None, "cookie"


def same_origin(conn: HTTPConnection) -> bool:
    """Whether ``Origin`` (else ``Referer``) names this gateway's own host and port.

    The browser sets both ``Host`` and ``Origin``; a page elsewhere cannot make them agree.
    """
    source = conn.headers.get("origin") or conn.headers.get("referer")
    host = conn.headers.get("host")
    if not source or not host or source == "null":
        return False
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else ``/`` (no open redirect via ``next``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def login_redirect(conn: HTTPConnection) -> RedirectResponse:
    target = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(safe_next(target), safe='/')}", status_code=303)


def _error(exc: FerryError, headers: dict[str, str] | None = None) -> JSONResponse:
    status, code = status_of(exc)
    return JSONResponse(error_body(code, exc.message, exc.field), status_code=status, headers=headers)


def set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


class AuthMiddleware:
    """Pure ASGI middleware (responses stream through untouched); a no-op while auth is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gw = getattr(scope["app"].state, "gw", None)
        if gw is None or not gw.settings.auth_required:
            await self.app(scope, receive, send)
            return
        refusal = await self.authenticate(scope, gw.tokens)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def authenticate(self, scope: Scope, tokens: TokenChecker) -> Response | None:
        """None to let the request through (with ``state.principal`` set), else the refusal."""
        request = Request(scope)
        path, method = request.url.path, request.method.upper()
        api = path == "/api" or path.startswith("/api/")
        if api:
            required = auth.required_role(method, path[len("/api") :])
            if required is None:
                return None
        elif path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        else:
            required = "viewer"

        token, via = presented_token(request)
        info = await tokens.acheck(token)
        if info is None:
            if not api:
                if method in auth.SAFE_METHODS:
                    return login_redirect(request)
                return PlainTextResponse("sign in first", status_code=401)
            why = "an API token is required" if token is None else "the API token is unknown or revoked"
            challenge = 'Bearer realm="ferry"' + ("" if token is None else ', error="invalid_token"')
            return _error(
                Unauthenticated(f"{why}: send Authorization: Bearer <token>", field="authorization"),
                {"WWW-Authenticate": challenge},
            )
        scope.setdefault("state", {})["principal"] = Principal(info.name, info.role, via)
        if via == "cookie" and method not in auth.SAFE_METHODS and not same_origin(request):
            log.info("refused a cookie request from another origin", extra={"path": path, "token": info.name})
            return _error(
                Forbidden(
                    "a request signed in by the portal's cookie must come from the portal itself "
                    "(Origin does not match); tools send Authorization: Bearer <token>",
                    field="origin",
                )
            )
        if not auth.allows(info.role, required):
            return _error(
                Forbidden(
                    f"{method} {path} needs the {required} role; token {info.name!r} is a {info.role}",
                    field="authorization",
                )
            )
        return None
