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
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.domain.auth import is_loopback
from ferry.domain.errors import Conflict, StoreUnavailable
from ferry.infra import gc, metrics, orchestrator, tracing
from ferry.infra.bus import WORK_STREAM, Bus, open_bus
from ferry.infra.natsauth import without_userinfo
from ferry.infra.projector import Projector
from ferry.infra.secrets import SecretBox
from ferry.infra.settings import Settings
from ferry.infra.tokens import TokenChecker
from ferry.infra.worker import retrying, supervise
from services.gateway import api, login, portal
from services.gateway.auth import AuthMiddleware
from services.gateway.errors import error_body, install_error_handlers
from services.gateway.guard import GuardMiddleware

log = logging.getLogger("ferry.gateway")
CONNECT_GRACE = 5.0
"""Seconds the gateway waits for NATS before it serves without it."""
BOOTSTRAP_TOKEN_NAME = "bootstrap"  # noqa: S105 - a name, not a secret


class BusLink:
    """The gateway's connection to NATS, opened in the background so that it serves without it.

    Until NATS answers, requests that need it get a 503 naming the cause (``StoreUnavailable``)
    and ``/healthz`` fails; requests that need only the database are answered as usual.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.bus: Bus | None = None
        self.problem = f"the gateway has not reached NATS at {address} yet; it keeps trying"
        self.ready = asyncio.Event()

    def get(self) -> Bus:
        if self.bus is None:
            raise StoreUnavailable(self.problem)
        return self.bus

    def health(self) -> str | None:
        """What keeps the gateway from being healthy, or None."""
        if self.bus is None:
            return self.problem
        if not self.bus.nc.is_connected:
            return f"the gateway lost NATS at {self.address}; it is reconnecting"
        return None

    async def open(self, settings: Settings, stack: contextlib.AsyncExitStack) -> Bus:
        """Connect (nats-py waits for a server that is away) and set up; try again on failure."""

        def failed(exc: Exception) -> None:  # said on /healthz and in the log
            self.problem = str(exc) if isinstance(exc, StoreUnavailable) else f"NATS at {self.address}: {exc}"

        def refused(exc: Exception) -> bool:  # a wrong credential: stop with the message
            return isinstance(exc, StoreUnavailable) and "refused the connection" in str(exc)

        bus = await retrying(
            "opening the event store",
            lambda: open_bus(settings.nats, name="ferry-gateway"),
            fatal=refused,
            failed=failed,
        )
        stack.push_async_callback(bus.close)
        self.bus = bus
        self.ready.set()
        return bus


@dataclass
class Gateway:
    """Everything a request handler may need; ``request.app.state.gw``."""

    settings: Settings
    link: BusLink
    sessions: sessionmaker[Session]
    box: SecretBox
    projector: Projector
    tokens: TokenChecker

    @property
    def bus(self) -> Bus:
        """The NATS connection; ``StoreUnavailable`` (503) while the gateway has not reached NATS."""
        return self.link.get()


def gateway(request: Any) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


async def metrics_page(request: Request) -> Response:
    """Prometheus text: the shared registry, with the queues' depth read from JetStream now.

    Auth on, it needs a token like every page (``AuthMiddleware``; a viewer's will do)."""
    bus = gateway(request).link.bus
    if bus is not None:
        await metrics.refresh_queue_depth(bus.js, work_stream=WORK_STREAM, events_stream=bus.events.stream)
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


async def healthz(request: Request) -> JSONResponse:
    problem = gateway(request).link.health()
    if problem is not None:
        body = {"ok": False, "nats": False, **error_body("STORE_UNAVAILABLE", problem)}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"ok": True, "nats": True})


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


async def _background(
    link: BusLink, projector: Projector, sessions: sessionmaker[Session], stop: asyncio.Event
) -> None:
    """The projector and the orchestrator, once NATS has answered."""
    waiting = asyncio.create_task(link.ready.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for t in (waiting, stopping):
        t.cancel()
    if stop.is_set():
        return
    bus = link.get()
    await asyncio.gather(
        supervise("projector", lambda: projector.run(bus, stop), stop),
        supervise("orchestrator", lambda: orchestrator.run(bus, stop, group_of=group_lookup(sessions)), stop),
        supervise("gc", lambda: gc.loop(bus, sessions, stop), stop),
    )


def create_app(settings: Settings, *, background: bool = True) -> Starlette:
    """The gateway ASGI app. ``background`` runs the projector and the orchestrator in-process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            link = BusLink(without_userinfo(settings.nats))
            engine = make_engine(settings.db_url)
            stack.callback(engine.dispose)
            sessions = session_factory(engine)
            projector = Projector(sessions)
            tokens = TokenChecker(sessions)
            if settings.bootstrap_token:
                await asyncio.to_thread(ensure_bootstrap_token, tokens, settings.bootstrap_token)
            box = SecretBox.from_settings(settings)
            app.state.gw = Gateway(settings, link, sessions, box, projector, tokens)
            log.info("authentication", extra={"auth": "token" if settings.auth_required else "off"})
            warn_if_open(settings)
            stop = asyncio.Event()
            connecting = asyncio.create_task(link.open(settings, stack), name="gateway-nats")
            # Serve at once when NATS answers in time, as before; otherwise serve without it
            # (health failing, 503s naming the cause) and connect in the background.
            done, _ = await asyncio.wait({connecting}, timeout=CONNECT_GRACE)
            if done:
                connecting.result()  # a refused credential stops the gateway here, as it says why
            else:
                log.warning("serving before NATS answers", extra={"why": link.problem})
            tasks: list[asyncio.Task[Any]] = [connecting]
            if background:
                tasks.append(asyncio.create_task(_background(link, projector, sessions, stop)))
            try:
                yield
            finally:
                stop.set()
                connecting.cancel()
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
            Route("/metrics", metrics_page),
            Mount("/api", routes=api.routes),
            *login.routes,
            *portal.routes,
        ],
        middleware=[
            Middleware(tracing.TracingMiddleware),  # outermost: the span sees every answer
            Middleware(GuardMiddleware, settings=settings),
            Middleware(AuthMiddleware),
        ],
        lifespan=lifespan,
    )
    install_error_handlers(app)
    return app
