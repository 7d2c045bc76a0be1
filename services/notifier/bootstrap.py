"""Runs the notifier under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

import uvicorn
from starlette.applications import Starlette

from ferry.service import serve_http
from ferry.settings import Settings
from services.notifier.app import create_app


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
    await serve_http(server_config(settings), stop, "notifier")
