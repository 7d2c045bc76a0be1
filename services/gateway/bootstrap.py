"""Runs the gateway under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from ferry.settings import Settings
from services.gateway.app import create_app


async def main(settings: Settings, stop: asyncio.Event) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise SystemExit(f"gateway could not serve on {settings.http_host}:{settings.http_port}")
