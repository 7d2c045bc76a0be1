"""The gateway's composition: dependencies opened in the lifespan, routes, error translation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from ferry import orchestrator
from ferry.auth import is_loopback
from ferry.bus import Bus, open_bus
from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.errors import Conflict
from ferry.projector import Projector
from ferry.secrets import SecretBox
from ferry.settings import Settings
from ferry.tokens import TokenChecker
from ferry.worker import supervise
from services.gateway import api, login, portal
from services.gateway.auth import AuthMiddleware
from services.gateway.errors import install_error_handlers
from services.gateway.guard import GuardMiddleware

log = logging.getLogger("ferry.gateway")
BOOTSTRAP_TOKEN_NAME = "bootstrap"  # noqa: S105 - a name, not a secret


@dataclass
class Gateway:
    """Everything a request handler may need; ``request.app.state.gw``."""

    settings: Settings
    bus: Bus
    sessions: sessionmaker[Session]
    box: SecretBox
    projector: Projector
    tokens: TokenChecker


def gateway(request: Any) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


async def healthz(request: Request) -> JSONResponse:
    gw = gateway(request)
    return JSONResponse({"ok": True, "nats": gw.bus.nc.is_connected})


def group_lookup(sessions: sessionmaker[Session]) -> orchestrator.GroupOf:
    """The orchestrator's host -> agent group look-up, read from the hosts table."""

    def group_of(host: str) -> str:
        with sessions() as session:
            return repo.agent_group_of(session, host)

    return group_of


def ensure_bootstrap_token(tokens: TokenChecker, token: str) -> None:
    """``FERRY_BOOTSTRAP_TOKEN``: an admin token named ``bootstrap`` with that value exists.

    It is made on first start only (no admin token yet), or updated while it still exists: a
    bootstrap token an admin revoked stays revoked however often the gateway restarts.
    """
    with tokens.sessions() as session:
        needed = repo.token_exists(session, BOOTSTRAP_TOKEN_NAME) or not repo.admin_token_exists(session)
    if not needed:
        log.warning(
            "FERRY_BOOTSTRAP_TOKEN is ignored: the bootstrap token was revoked and other admin tokens "
            "exist; remove the variable from the environment"
        )
        return
    try:
        tokens.ensure(BOOTSTRAP_TOKEN_NAME, "admin", token)
    except ValueError as exc:
        raise SystemExit(f"FERRY_BOOTSTRAP_TOKEN: {exc}") from None
    except Conflict:  # another gateway copy wrote it at the same moment
        tokens.ensure(BOOTSTRAP_TOKEN_NAME, "admin", token)


def warn_if_open(settings: Settings) -> None:
    """Say loudly when anyone who reaches the gateway is an admin."""
    if settings.auth_required:
        return
    if is_loopback(settings.http_host):
        log.info("authentication is off (loopback bind): every local user is an admin")
        return
    log.warning(
        "AUTHENTICATION IS OFF on %s (FERRY_AUTH=off): anyone who reaches this address is an admin "
        "and can run commands on every host; set FERRY_AUTH=token unless a proxy in front authenticates",
        settings.http_host,
    )


def create_app(settings: Settings, *, background: bool = True) -> Starlette:
    """The gateway ASGI app. ``background`` runs the projector and the orchestrator in-process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            bus = await open_bus(settings.nats, name="ferry-gateway")
            stack.push_async_callback(bus.close)
            engine = make_engine(settings.db_url)
            stack.callback(engine.dispose)
            sessions = session_factory(engine)
            projector = Projector(sessions)
            tokens = TokenChecker(sessions)
            if settings.bootstrap_token:
                await asyncio.to_thread(ensure_bootstrap_token, tokens, settings.bootstrap_token)
            box = SecretBox.from_settings(settings)
            app.state.gw = Gateway(settings, bus, sessions, box, projector, tokens)
            log.info("authentication", extra={"auth": "token" if settings.auth_required else "off"})
            warn_if_open(settings)
            stop = asyncio.Event()
            tasks = []
            if background:
                tasks = [
                    asyncio.create_task(supervise("projector", lambda: projector.run(bus, stop), stop)),
                    asyncio.create_task(
                        supervise(
                            "orchestrator",
                            lambda: orchestrator.run(bus, stop, group_of=group_lookup(sessions)),
                            stop,
                        ),
                    ),
                ]
            try:
                yield
            finally:
                stop.set()
                for t in tasks:
                    try:
                        await asyncio.wait_for(t, 10)
                    except (TimeoutError, asyncio.CancelledError):
                        t.cancel()
                    except Exception:
                        log.exception("background task failed", extra={"task": t.get_name()})

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Mount("/api", routes=api.routes),
            *login.routes,
            *portal.routes,
        ],
        middleware=[Middleware(GuardMiddleware, settings=settings), Middleware(AuthMiddleware)],
        lifespan=lifespan,
    )
    install_error_handlers(app)
    return app
