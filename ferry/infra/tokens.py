"""Checking a presented API token against the database: the gateway's and the notifier's one door.

Only the token's sha256 is looked up; ``last_used_at`` is written at most once per
``TOUCH_INTERVAL`` per token, so a busy client does not turn every read into a write.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ferry.db import repo
from ferry.domain import auth
from ferry.domain.events import utcnow

log = logging.getLogger("ferry.domain.auth")


class TokenChecker:
    """Who a token belongs to (``repo.TokenInfo``), or None for an unknown or revoked one."""

    def __init__(self, sessions: sessionmaker[Session], *, touch_interval: float = auth.TOUCH_INTERVAL):
        self.sessions = sessions
        self.touch_interval = touch_interval
        self._touched: dict[int, float] = {}  # token id -> time.monotonic() of our last write

    def check(self, token: str | None) -> repo.TokenInfo | None:
        """Blocking: call it from a worker thread (``acheck`` does)."""
        if not token or not auth.plausible_token(token):
            return None
        digest = auth.hash_token(token)
        with self.sessions() as session, session.begin():
            info = repo.token_by_hash(session, digest)
        if info is not None:
            self._touch(info)
        return info

    async def acheck(self, token: str | None) -> repo.TokenInfo | None:
        if not token:
            return None
        return await asyncio.to_thread(self.check, token)

    def ensure(self, name: str, role: str, token: str) -> repo.TokenInfo:
        """Make ``name`` a ``role`` token with this secret (``FERRY_BOOTSTRAP_TOKEN``)."""
        if not auth.plausible_token(token):
            raise ValueError(
                f"the token for {name!r} must be {auth.MIN_TOKEN_LENGTH}-{auth.MAX_TOKEN_LENGTH} "
                "printable ASCII characters without spaces (ferry token create makes one)"
            )
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"ferry_write": True})
            return repo.ensure_token(session, name, role, auth.hash_token(token))

    def _touch(self, info: repo.TokenInfo) -> None:
        now = time.monotonic()
        if now - self._touched.get(info.id, -math.inf) < self.touch_interval:
            return
        wall = utcnow()
        recent = timedelta(seconds=self.touch_interval)
        if info.last_used_at is not None and wall - info.last_used_at < recent:
            self._touched[info.id] = now  # another process wrote it recently
            return
        self._touched[info.id] = now
        try:
            with self.sessions() as session, session.begin():
                session.connection(execution_options={"ferry_write": True})
                repo.touch_token(session, info.id, wall, self.touch_interval)
        except OperationalError as exc:  # a busy database must not refuse the request
            log.warning("could not record a token's last use", extra={"token": info.name, "why": str(exc)})
