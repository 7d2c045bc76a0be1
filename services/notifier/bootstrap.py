"""Wires the notifier: one NATS connection and database engine; the WebSocket app under uvicorn
and the webhook deliverer beside it, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from ferry.db.engine import make_engine, session_factory
from ferry.infra import tracing
from ferry.infra.bus import open_bus
from ferry.infra.secrets import SecretBox
from ferry.infra.service import serve_http
from ferry.infra.settings import Settings
from ferry.infra.worker import supervise
from services.notifier import webhooks
from services.notifier.app import NotifierConfig, create_app
from services.notifier.fanout import DIRECT_SEND

log = logging.getLogger("ferry.notifier")


class ProtocolSink:
    """A ``Sink`` over one uvicorn connection: writes whole frames to its transport, no await.

    Data frames carry no protocol state (no fragmentation, no compression: permessage-deflate is
    off, and RFC 7692 lets any message go uncompressed anyway), so writing the bytes the hub
    encoded once is what ``send_text`` would write, minus the per-client encoding and the task
    switch. Pings, closes and back-pressure stay with uvicorn's protocol.
    """

    __slots__ = ("protocol", "transport", "ready")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.ready = protocol.writable  # uvicorn clears it on pause_writing, sets it on resume or loss

    @property
    def closed(self) -> bool:
        return self.protocol.close_sent or self.transport.is_closing()

    @property
    def writable(self) -> bool:
        return self.ready.is_set()

    def write(self, data: bytes) -> bool:
        # The hot path: one call per client and event. The app closes (close_sent) only clients it
        # has unsubscribed, so a closing transport is the one case to skip.
        if self.transport.is_closing():
            return True  # going away: its reader sees the disconnect and unsubscribes it
        self.transport.write(data)
        return self.ready.is_set()

    async def drained(self) -> None:
        await self.ready.wait()


class NotifierWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering the app a ``Sink`` as an ASGI extension."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # the app's task is created, not yet started
            extensions: dict[str, object] = self.scope["extensions"]  # type: ignore[assignment]
            extensions[DIRECT_SEND] = ProtocolSink(self)


def server_config(settings: Settings, app: Starlette | None = None) -> uvicorn.Config:
    """uvicorn settings for many small WebSocket clients: sans-I/O websockets with direct frame
    writes, no compression (deflate would compress every frame once per client)."""
    return uvicorn.Config(
        app or create_app(settings),
        host=settings.http_host,
        port=settings.ws_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws=NotifierWebSocketProtocol,
        ws_per_message_deflate=False,  # ~64 KiB per connection with it, ~14 KiB without
        ws_max_size=64 * 1024,  # clients only send {"since": N}
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        backlog=2048,
    )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """The notifier's one composition root: one NATS connection and one database engine, shared
    by the WebSocket app and the webhook deliverer (which comes back by itself if it fails)."""
    tracing.setup("notifier", traces_dir=settings.traces_dir)
    async with contextlib.AsyncExitStack() as stack:
        bus = await open_bus(settings.nats, name="ferry-notifier")
        stack.push_async_callback(bus.close)
        engine = make_engine(settings.db_url)
        stack.callback(engine.dispose)
        sessions = session_factory(engine)
        app = create_app(settings, NotifierConfig.from_settings(settings), bus=bus, sessions=sessions)
        box = SecretBox.from_settings(settings)
        delivery = webhooks.WebhookConfig.from_settings(settings)
        deliverer = asyncio.create_task(
            supervise("webhooks", lambda: webhooks.run(bus, sessions, box, stop, delivery), stop),
            name="webhooks",
        )
        try:
            await serve_http(server_config(settings, app), stop, "notifier")
        finally:
            stop.set()
            try:
                await asyncio.wait_for(deliverer, 15)
            except TimeoutError:
                log.warning("webhook deliverer did not stop in time")
