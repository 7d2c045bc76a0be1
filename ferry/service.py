"""Process entry for a worker service: logging, signals, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from ferry import logs
from ferry.settings import Settings


def run(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    settings = Settings.from_env()
    logs.configure(name, settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    asyncio.run(_main())
