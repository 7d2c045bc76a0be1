"""Runs the gateway under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

import uvicorn

from ferry.infra import tracing
from ferry.infra.service import serve_http
from ferry.infra.settings import Settings
from services.gateway.app import create_app


async def main(settings: Settings, stop: asyncio.Event) -> None:
    tracing.setup("gateway", traces_dir=settings.traces_dir)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    await serve_http(config, stop, "gateway")
