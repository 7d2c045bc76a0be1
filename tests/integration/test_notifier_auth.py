"""Token authentication on the real notifier's WebSocket: valid, revoked and missing tokens, the cookie."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed

from ferry.db import repo
from ferry.db.engine import make_engine, session_factory
from ferry.domain import auth
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from services.notifier.app import NotifierConfig
from services.notifier.app import create_app as create_notifier
from services.notifier.bootstrap import server_config
from tests.integration.auth_harness import secured_settings


# --- the notifier ---------------------------------------------------------------------
@contextlib.asynccontextmanager
async def secured_notifier(settings: Settings) -> AsyncIterator[str]:
    app = create_notifier(
        settings, NotifierConfig(heartbeat=0.3, first_message_timeout=0.3, token="ws-s3cret")
    )
    server = uvicorn.Server(server_config(settings, app))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "notifier did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{settings.ws_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _first_frame(url: str, **kw: Any) -> dict[str, Any] | int:
    """The first frame's kind, or the close code when the notifier refused."""
    async with websockets.connect(url, **kw) as ws:
        try:
            frame = await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code
        return {"frame": frame}


async def test_notifier_needs_a_valid_token(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    engine = make_engine(migrated_db)
    token, revoked = auth.new_token(), auth.new_token()
    with session_factory(engine)() as session, session.begin():
        repo.create_token(session, "watcher", "viewer", auth.hash_token(token))
        repo.create_token(session, "gone", "viewer", auth.hash_token(revoked))
        repo.revoke_token(session, "gone")
    engine.dispose()
    settings = secured_settings(tmp_path, nats_server.url, migrated_db, ws_port=free_port())
    async with secured_notifier(settings) as url:
        base = f"{url}/ws/all?since=0"
        assert await _first_frame(base) == 4401
        assert await _first_frame(f"{base}&token={revoked}") == 4401
        assert await _first_frame(f"{base}&token=fry_nonsense-nonsense") == 4401
        # A cookie from a page on another host is refused even with a valid token: the upgrade
        # itself is refused (403) before any WebSocket exists.
        cookie = {"Cookie": f"{auth.COOKIE_NAME}={token}"}
        evil = {**cookie, "Origin": "http://evil.example:8000"}
        with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):
            await _first_frame(base, additional_headers=evil)

        assert isinstance(await _first_frame(f"{base}&token={token}"), dict)
        portal = {**cookie, "Origin": "http://127.0.0.1:8000"}
        assert isinstance(await _first_frame(base, additional_headers=portal), dict)
        assert isinstance(await _first_frame(f"{base}&token=ws-s3cret"), dict)  # FERRY_WS_TOKEN still works
