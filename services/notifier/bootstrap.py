"""Runs the notifier under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from starlette.applications import Starlette

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
    server = uvicorn.Server(server_config(settings))
    # The service's stop event is the one signal path (uvicorn 0.29+ would take SIGTERM itself).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise SystemExit(f"notifier could not serve on {settings.http_host}:{settings.ws_port}")
