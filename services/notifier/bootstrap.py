"""Runs the notifier under uvicorn until SIGTERM/SIGINT, with the webhook deliverer beside it."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.applications import Starlette

from ferry.service import serve_http
from ferry.settings import Settings
from services.notifier import webhooks
from services.notifier.app import create_app

log = logging.getLogger("ferry.notifier")


def server_config(settings: Settings, app: Starlette | None = None) -> uvicorn.Config:
    """uvicorn settings for many small WebSocket clients: sans-I/O websockets, no compression."""
    return uvicorn.Config(
        app or create_app(settings),
        host=settings.http_host,
        port=settings.ws_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # ~64 KiB per connection with it, ~14 KiB without
        ws_max_size=64 * 1024,  # clients only send {"since": N}
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        backlog=2048,
    )


async def main(settings: Settings, stop: asyncio.Event) -> None:
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
