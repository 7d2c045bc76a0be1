"""Process entry for a worker service: logging, signals, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import uvicorn

from ferry.infra import logs
from ferry.infra.settings import Settings


def run(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    settings = Settings.from_env()
    fields = {"agent": settings.agent_name, "agent_group": settings.agent_group} if name == "agent" else {}
    logs.configure(name, settings.log_level, fields)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    asyncio.run(_main())


async def serve_http(config: uvicorn.Config, stop: asyncio.Event, what: str) -> None:
    """Serve an ASGI app under uvicorn until ``stop`` is set; the stop event is the one signal path."""
    server = uvicorn.Server(config)
    # uvicorn 0.29+ would install its own SIGTERM/SIGINT handlers; the service's stop event rules.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise SystemExit(f"{what} could not serve on {config.host}:{config.port}")
