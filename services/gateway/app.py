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
    """``FERRY_BOOTSTRAP_TOKEN``: an admin token named ``bootstrap`` with that value exists."""
    try:
        tokens.ensure(BOOTSTRAP_TOKEN_NAME, "admin", token)
    except ValueError as exc:
        raise SystemExit(f"FERRY_BOOTSTRAP_TOKEN: {exc}") from None
    except Conflict:  # another gateway copy wrote it at the same moment
        tokens.ensure(BOOTSTRAP_TOKEN_NAME, "admin", token)


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
        middleware=[Middleware(AuthMiddleware)],
        lifespan=lifespan,
    )
    install_error_handlers(app)
    return app
