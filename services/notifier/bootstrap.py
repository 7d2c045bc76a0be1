"""Runs the notifier under uvicorn until SIGTERM/SIGINT, with the webhook deliverer beside it."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from ferry.infra import tracing
from ferry.infra.service import serve_http
from ferry.infra.settings import Settings
from services.notifier import webhooks
from services.notifier.app import create_app
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
    tracing.setup("notifier", traces_dir=settings.traces_dir)
    deliverer = asyncio.create_task(webhooks.main(settings, stop), name="webhooks")
    try:
        await serve_http(server_config(settings), stop, "notifier")
    finally:
        stop.set()
        try:
            await asyncio.wait_for(deliverer, 15)
        except TimeoutError:
            log.warning("webhook deliverer did not stop in time")
        except Exception:
            log.exception("webhook deliverer failed")
