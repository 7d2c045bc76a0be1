"""The gateway's outer door, before authentication: who may be named, who may write, how much.

Whether or not auth is on, every request must name an allowed ``Host`` (DNS rebinding makes a
page elsewhere talk to 127.0.0.1 under its own name); a state-changing request sent by a
browser must come from the portal itself (``Origin``, else ``Sec-Fetch-Site``); an API body must
be ``application/json`` (a form or a ``text/plain`` fetch is the shape of a cross-site
request); and no body is read past ``FERRY_MAX_BODY``: ``Content-Length`` is checked first and
the bytes are counted as they stream. See docs/security.md.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferry.domain.auth import SAFE_METHODS
from ferry.infra import webguard
from ferry.infra.settings import Settings
from services.gateway.api.text import text_problem
from services.gateway.errors import PayloadTooLarge, error_body

log = logging.getLogger("ferry.gateway")

JSON_TYPES = ("application/json",)
USER_HEADER = "X-Ferry-User"
BROWSER_FOREIGN_SITES = ("cross-site", "same-site")


def _refuse(scope: Scope, status: int, code: str, message: str, field: str) -> Response:
    if str(scope.get("path", "")).startswith("/api"):
        return JSONResponse(error_body(code, message, field), status_code=status)
    return PlainTextResponse(message, status_code=status)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def check(scope: Scope, settings: Settings, allowed: frozenset[str] | None) -> Response | None:
    """The refusal for this request, or None to let it in."""
    headers = Headers(scope=scope)
    host = headers.get("host")
    if not webguard.host_allowed(host, allowed):
        log.warning("refused a request for a foreign Host", extra={"host": (host or "")[:100]})
        return _refuse(
            scope,
            421,
            "HOST_NOT_ALLOWED",
            f"this server does not answer to the host name {(host or '')[:100]!r}; "
            "add it to FERRY_ALLOWED_HOSTS (or set FERRY_PUBLIC_URL) if it is really this server",
            "host",
        )
    user = headers.get(USER_HEADER)
    if user is not None and (problem := text_problem(user)) is not None:
        # who the caller says it is (auth off) ends up in events and on screens: the text policy
        return _refuse(scope, 400, "INVALID_HEADER", f"{USER_HEADER} {problem}", USER_HEADER)
    if scope["type"] != "http" or str(scope.get("method", "GET")).upper() in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if settings.auth_required and headers.get("authorization"):
        pass  # a bearer token: no page elsewhere can attach one without a CORS preflight ferry refuses
    elif origin is not None:
        if not webguard.same_origin(origin, host):
            return _refuse(
                scope,
                403,
                "FOREIGN_ORIGIN",
                f"a page at {origin[:100]!r} may not change anything here: state-changing requests "
                "are accepted from the portal itself, or from tools that send no Origin",
                "origin",
            )
    elif headers.get("sec-fetch-site", "").lower() in BROWSER_FOREIGN_SITES:
        return _refuse(
            scope, 403, "FOREIGN_ORIGIN", "a page on another site may not change anything here", "origin"
        )
    if str(scope.get("path", "")).startswith("/api"):
        content_type = headers.get("content-type")
        has_body = headers.get("transfer-encoding") is not None or headers.get("content-length", "0") != "0"
        if (content_type is not None or has_body) and not is_json(content_type or ""):
            return _refuse(
                scope,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with Content-Type: application/json",
                "content-type",
            )
    return None


def _declared_length(scope: Scope) -> int | None:
    raw = Headers(scope=scope).get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return -1


class GuardMiddleware:
    """Pure ASGI middleware: Host allow-list, Origin and media-type checks, and the body bound."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.allowed = webguard.allowed_hosts(settings)
        self.limit = settings.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = check(scope, self.settings, self.allowed)
        if refusal is None and scope["type"] == "http":
            length = _declared_length(scope)
            if length is not None and (length < 0 or length > self.limit):
                refusal = _refuse(
                    scope,
                    413 if length > 0 else 400,
                    "TOO_LARGE" if length > 0 else "BAD_REQUEST",
                    f"request body is larger than {self.limit} bytes"
                    if length > 0
                    else "Content-Length is not a number",
                    "body",
                )
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4403, "reason": "refused"})
                return
            await refusal(scope, receive, send)
            return
        if scope["type"] == "http":
            receive = self._counted(receive)
        await self.app(scope, receive, send)

    def _counted(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.limit

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
            return message

        return counted
