"""The portal's ``/login`` and ``/logout``: a pasted API token becomes an HttpOnly, SameSite=Strict cookie.

The cookie holds the token itself, so revoking the token signs every browser out at once.
Both forms must come from the portal's own origin (login CSRF would sign a victim in as the
attacker).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.gateway.auth import clear_cookie, safe_next, same_origin, set_cookie
from services.gateway.portal import page

MAX_FORM = 8 * 1024


def _auth_on(request: Request) -> bool:
    gw = getattr(request.app.state, "gw", None)
    return bool(gw is not None and gw.settings.auth_required)


def _login_form(request: Request, next_path: str, error: str = "", status: int = 200) -> Response:
    return page(request, "login.html", "Sign in", status=status, next=next_path, error=error)


async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if not _auth_on(request):
        return RedirectResponse(next_path, status_code=303)  # nothing to sign in to
    return _login_form(request, next_path)


async def login(request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("the sign-in form must be posted from this portal", status_code=403)
    raw = await request.body()
    if len(raw) > MAX_FORM:
        return PlainTextResponse("form too large", status_code=413)
    form = parse_qs(raw.decode("utf-8", errors="replace"), max_num_fields=10)
    next_path = safe_next((form.get("next") or ["/"])[0])
    if not _auth_on(request):
        return RedirectResponse(next_path, status_code=303)
    token = (form.get("token") or [""])[0].strip()
    info = await request.app.state.gw.tokens.acheck(token)
    if info is None:
        return _login_form(request, next_path, "That token is unknown or revoked.", status=401)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, request, token)
    return response


async def logout_page(request: Request) -> Response:
    return page(request, "logout.html", "Sign out")


async def logout(request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("the sign-out form must be posted from this portal", status_code=403)
    response = RedirectResponse("/login" if _auth_on(request) else "/", status_code=303)
    clear_cookie(response, request)
    return response


routes = [
    Route("/login", login_page, methods=["GET"], name="portal:login"),
    Route("/login", login, methods=["POST"], name="portal:login_post"),
    Route("/logout", logout_page, methods=["GET"], name="portal:logout"),
    Route("/logout", logout, methods=["POST"], name="portal:logout_post"),
]
