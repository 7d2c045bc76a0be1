"""The notifier's Starlette app: WebSocket channels over the shared fan-out, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ferry.db.engine import make_engine, session_factory
from ferry.domain import auth
from ferry.infra import webguard
from ferry.infra.bus import Bus, open_bus
from ferry.infra.eventstore import RELEASE_ID
from ferry.infra.metrics import CONTENT_TYPE
from ferry.infra.settings import Settings
from ferry.infra.tokens import TokenChecker
from ferry.infra.worker import supervise
from services.notifier.fanout import (
    DIRECT_SEND,
    Channel,
    ChannelKind,
    Hub,
    Item,
    Sink,
    Subscriber,
    heartbeat_frame,
    resync_frame,
    wire_frame,
)
from services.notifier.metrics import Metrics
from services.notifier.wsinput import BadInput, parse_first_message, parse_since

log = logging.getLogger("ferry.notifier")

CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_RESYNC = 4429  # fell behind: reconnect with the ``since`` of the resync frame

Authorize = Callable[[WebSocket, Channel], bool | Awaitable[bool]]


@dataclass(frozen=True)
class NotifierConfig:
    heartbeat: float = 15.0
    queue_size: int = 1000
    ring_size: int = 4096
    first_message_timeout: float = 0.5  # without ?since=, how long to wait for {"since": N}
    send_timeout: float = 2.0  # for the resync frame and close of a client that fell behind
    token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierConfig:
        return cls(
            heartbeat=settings.ws_heartbeat,
            queue_size=settings.ws_queue,
            ring_size=settings.ws_ring,
            token=settings.ws_token,
        )


def token_authorizer(token: str | None) -> Authorize:
    """Allow everyone without a token; with one, require ``?token=`` to match it."""

    def authorize(websocket: WebSocket, channel: Channel) -> bool:
        if token is None:
            return True
        given = websocket.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    return authorize


def _same_host(websocket: WebSocket) -> bool:
    """A browser's ``Origin`` names the host the client connected to (the portal, on another port)."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: it chose to send the cookie itself
    try:
        origin_host = urlsplit(origin).hostname
    except ValueError:
        return False
    return origin_host is not None and origin_host == websocket.url.hostname


def api_token_authorizer(tokens: TokenChecker, ws_token: str | None = None) -> Authorize:
    """With auth on: a valid API token from ``?token=`` or the portal's cookie (whose page must be
    on this host); ``FERRY_WS_TOKEN``, when set, still works as ``?token=``."""

    async def authorize(websocket: WebSocket, channel: Channel) -> bool:
        given = websocket.query_params.get("token") or None
        if given is not None and ws_token is not None:
            if hmac.compare_digest(given.encode(), ws_token.encode()):
                return True
        token = given
        if token is None:
            token = websocket.cookies.get(auth.COOKIE_NAME) or None
            if token is not None and not _same_host(websocket):
                return False
        return await tokens.acheck(token) is not None

    return authorize


@dataclass
class Notifier:
    config: NotifierConfig
    hub: Hub
    metrics: Metrics
    authorize: Authorize


def _notifier(conn: Request | WebSocket) -> Notifier:
    n: Notifier = conn.app.state.notifier
    return n


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def metrics(request: Request) -> Response:
    n = _notifier(request)
    return Response(n.metrics.exposition(n.hub.counts(), n.hub.head), media_type=CONTENT_TYPE)


async def _first_since(websocket: WebSocket, wait: float, default: int) -> int | None:
    """The ``since`` of an optional first message ``{"since": N}``; None when the client left."""
    try:
        message = await asyncio.wait_for(websocket.receive(), wait)
    except TimeoutError:
        return default
    if message["type"] == "websocket.disconnect":
        return None
    since = parse_first_message(message.get("text") or message.get("bytes"))
    return default if since is None else since


def _reason(text: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    return text.encode("utf-8", "replace")[:120].decode("utf-8", "ignore")


CATCH_UP_CHUNK = 64  # history items written per socket write while a client catches up


async def _pump(n: Notifier, sub: Subscriber, websocket: WebSocket) -> None:
    """Send the client's catch-up, then whatever queues up while it is behind, and heartbeats.

    With a sink, queued frames go out joined in one write and the client then goes live: the
    hub writes to it directly until its socket backs up, which hands it back to this pump.
    Heartbeats go out only after ``heartbeat`` seconds without a frame.
    """
    outbox, sink = sub.outbox, sub.sink

    async def send(items: list[Item], live: bool) -> None:
        if sink is not None:
            if sink.closed:
                raise ConnectionError("client went away")
            if not sink.write(items[0].wire if len(items) == 1 else b"".join(i.wire for i in items)):
                await sink.drained()
        else:
            for item in items:
                await websocket.send_text(item.frame)
        outbox.last_sent = max(outbox.last_sent, items[-1].seq)
        n.metrics.pushed += len(items)
        if live:
            now = time.time()
            for item in items:
                n.metrics.observe_latency(now - item.at)

    chunk: list[Item] = []
    async for item in n.hub.catch_up(sub):
        if outbox.overflowed:
            return
        if item.seq > (chunk[-1].seq if chunk else outbox.last_sent):
            chunk.append(item)
            if len(chunk) >= CATCH_UP_CHUNK:
                await send(chunk, live=False)
                chunk = []
    if chunk:
        await send(chunk, live=False)
    while not outbox.overflowed:
        if sink is not None and not sink.writable:
            await sink.drained()
            continue
        items = outbox.take()
        if items:
            await send(items, live=True)
            continue
        outbox.wake.clear()
        if sub.go_live():
            seen = outbox.last_sent
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(n.config.heartbeat):
                    await outbox.wake.wait()  # set when the socket backs up or on overflow
            if outbox.last_sent != seen or outbox.wake.is_set():
                continue  # events went out meanwhile: no heartbeat needed
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(n.config.heartbeat):
                    await outbox.wake.wait()
            if outbox.wake.is_set():
                continue
        if outbox.overflowed:
            return
        frame = heartbeat_frame(outbox.last_sent)
        if sink is not None:
            if not sink.write(wire_frame(frame)):
                n.hub.demote(sub)
                await sink.drained()
        else:
            await websocket.send_text(frame)


async def _drain_receive(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _browser_ok(websocket: WebSocket) -> bool:
    """Host allow-list and Origin (ferry.infra.webguard): a page elsewhere may not open the feed."""
    check = getattr(websocket.app.state, "browser_ok", None)
    return check is None or bool(check(websocket.headers))


async def _serve(websocket: WebSocket, kind: ChannelKind, key: str = "") -> None:
    n = _notifier(websocket)
    if not _browser_ok(websocket):
        n.metrics.refused += 1
        await websocket.close(CLOSE_FORBIDDEN)  # before accept: the handshake gets HTTP 403
        return
    channel = Channel(kind, key)
    allowed = n.authorize(websocket, channel)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    await websocket.accept()
    if not allowed:
        n.metrics.refused += 1
        await websocket.close(CLOSE_UNAUTHORIZED, "unauthorized")
        return
    if kind == "release" and not RELEASE_ID.match(key):
        await websocket.close(CLOSE_BAD_REQUEST, "invalid release id")
        return
    try:
        since = parse_since(websocket.query_params.get("since"))
        if since is None:
            since = await _first_since(websocket, n.config.first_message_timeout, n.hub.head)
            if since is None:
                return
    except BadInput as exc:
        await websocket.close(CLOSE_BAD_REQUEST, _reason(str(exc)))
        return

    n.metrics.connections += 1
    kicked = asyncio.Event()
    sink: Sink | None = websocket.scope.get("extensions", {}).get(DIRECT_SEND)
    sub = n.hub.subscribe(channel, since, on_overflow=lambda _sub: kicked.set(), sink=sink)
    pump = asyncio.create_task(_pump(n, sub, websocket))
    reader = asyncio.create_task(_drain_receive(websocket))
    kick = asyncio.create_task(kicked.wait())
    try:
        await asyncio.wait({pump, reader, kick}, return_when=asyncio.FIRST_COMPLETED)
        if pump.done() and not pump.cancelled():
            failure = pump.exception()
            if failure is not None and not isinstance(failure, WebSocketDisconnect | OSError | RuntimeError):
                log.error("client pump failed", exc_info=failure)
        if sub.outbox.overflowed and not reader.done():
            pump.cancel()
            n.metrics.resyncs += 1
            log.info("client fell behind; resync", extra={"channel": kind, "since": sub.outbox.last_sent})
            frame = resync_frame(sub.outbox.last_sent, "client fell behind")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.send_text(frame), n.config.send_timeout)
                await asyncio.wait_for(websocket.close(CLOSE_RESYNC, "resync"), n.config.send_timeout)
    finally:
        n.hub.unsubscribe(sub)
        for task in (pump, reader, kick):
            task.cancel()
        await asyncio.gather(pump, reader, kick, return_exceptions=True)


async def ws_release(websocket: WebSocket) -> None:
    await _serve(websocket, "release", websocket.path_params["release_id"])


async def ws_project(websocket: WebSocket) -> None:
    await _serve(websocket, "project", websocket.path_params["project"])


async def ws_all(websocket: WebSocket) -> None:
    await _serve(websocket, "all")


def create_app(
    settings: Settings,
    config: NotifierConfig | None = None,
    *,
    authorize: Authorize | None = None,
    bus: Bus | None = None,
    sessions: sessionmaker[Session] | None = None,
) -> Starlette:
    """The notifier ASGI app over ``bus`` and ``sessions`` (the database, for API tokens), which
    ``services.notifier.bootstrap`` opens once for the whole process; standing alone (tests), it
    opens its own in the lifespan."""
    config = config or NotifierConfig.from_settings(settings)
    chosen = authorize

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            b = bus
            if b is None:
                b = await open_bus(settings.nats, name="ferry-notifier")
                stack.push_async_callback(b.close)
            metrics = Metrics()
            hub = Hub(b.events, ring_size=config.ring_size, queue_size=config.queue_size, metrics=metrics)
            authorize = chosen or token_authorizer(config.token)
            if chosen is None and settings.auth_required:
                db = sessions
                if db is None:
                    engine = make_engine(settings.db_url)
                    stack.callback(engine.dispose)
                    db = session_factory(engine)
                authorize = api_token_authorizer(TokenChecker(db), config.token)
            app.state.notifier = Notifier(config, hub, metrics, authorize)
            stop = asyncio.Event()
            follower = asyncio.create_task(
                supervise("notifier-follower", lambda: hub.run(stop), stop), name="notifier-follower"
            )
            ready = asyncio.create_task(hub.ready.wait())
            await asyncio.wait({follower, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if follower.done():
                follower.result()  # raises what stopped it
            try:
                yield
            finally:
                stop.set()
                try:
                    await asyncio.wait_for(follower, 5)
                except (TimeoutError, asyncio.CancelledError):
                    follower.cancel()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            WebSocketRoute("/ws/releases/{release_id}", ws_release),
            WebSocketRoute("/ws/projects/{project}", ws_project),
            WebSocketRoute("/ws/all", ws_all),
        ],
        lifespan=lifespan,
    )
    app.state.browser_ok = webguard.websocket_check(settings)
    return app
