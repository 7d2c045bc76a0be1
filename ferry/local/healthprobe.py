"""``ferry up`` asks builder and agents whether they are up: a request on ``ferry.health.<service>``.

The probe connects exactly as the services do (``ferry.infra.bus.connect``: every server of a
comma-separated cluster URL, the CA of ``tls://`` servers, the identity's credential), so a
platform the services reach is one the probe reaches. It keeps one connection for the whole wait
and remembers why it could not connect, which ``ferry up`` then says instead of only naming the
services it never heard from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import nats.errors
from nats.aio.client import Client

from ferry.domain.errors import StoreUnavailable
from ferry.infra import subjects
from ferry.infra.bus import connect
from ferry.infra.natsauth import Credential

CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 1.0


class _LastError(logging.Handler):
    """What ``connect`` reported while it kept trying (it logs each error, then tries again)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.error: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.error = str(getattr(record, "error", "") or record.getMessage())


class HealthProbe:
    """One NATS connection that asks workers for their health; ``close()`` when done."""

    def __init__(self, url: str, credential: Credential | None = None, ca: Path | None = None):
        self.url = url
        self.credential = credential
        self.ca = ca
        self.error: str | None = None
        """Why the last attempt to connect failed (None once connected)."""
        self._loop = asyncio.new_event_loop()
        self._nc: Client | None = None

    def healthy(self, services: tuple[str, ...]) -> set[str]:
        """The services among ``services`` that answered ``ok`` (bounded: a few seconds at most)."""
        return self._loop.run_until_complete(self._ask(services))

    async def _ask(self, services: tuple[str, ...]) -> set[str]:
        ok: set[str] = set()
        if self._nc is None:
            said, logger = _LastError(), logging.getLogger("ferry.infra.bus")
            logger.addHandler(said)
            try:
                self._nc = await asyncio.wait_for(
                    connect(self.url, name="ferry-up-health", credential=self.credential, ca=self.ca),
                    CONNECT_TIMEOUT,
                )
            except (StoreUnavailable, TimeoutError) as exc:
                self.error = str(exc) or said.error or f"no server answered within {CONNECT_TIMEOUT:.0f}s"
                return ok
            finally:
                logger.removeHandler(said)
            self.error = None
        for service in services:
            try:
                reply = await self._nc.request(subjects.health(service), b"", timeout=REQUEST_TIMEOUT)
                if json.loads(reply.data).get("ok"):
                    ok.add(service)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ValueError):
                pass
        return ok

    def close(self) -> None:
        async def closing() -> None:
            if self._nc is not None:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await self._nc.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        # closing is no loss of NATS: keep connect's "lost NATS" (and asyncio's TLS close notice)
        # out of `ferry up`'s output
        def quiet(_record: logging.LogRecord) -> bool:
            return False

        loggers = [logging.getLogger("ferry.infra.bus"), logging.getLogger("asyncio")]
        for logger in loggers:
            logger.addFilter(quiet)
        try:
            self._loop.run_until_complete(closing())
        finally:
            self._loop.close()
            for logger in loggers:
                logger.removeFilter(quiet)
