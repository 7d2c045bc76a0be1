"""Hostile first WebSocket messages (issue 9, item 10) close with 4400 and a reason, never a crash.

A real notifier (uvicorn, its own NATS connection to a real nats-server) and real WebSocket
clients; a crash in the handler would close with 1011/1006 and log a traceback, both checked.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_notifier import (
    append,
    receive_events,
    release_history,
    running_notifier,
    versions,
)

DEEP = "[" * 30_000 + "]" * 30_000
HOSTILE: dict[str, str | bytes] = {
    "infinity": '{"since": Infinity}',
    "nan": '{"since": NaN}',
    "overflow": '{"since": 1e309}',
    "overflow alone": "1e309",
    "array value": '{"since": [1]}',
    "object value": '{"since": {}}',
    "array": "[1]",
    "deep arrays": DEEP,
    "deep in an object": '{"since": ' + "[" * 10 + "]" * 10 + "}",
    "long frame": '{"since": 0, "pad": "' + "x" * 5000 + '"}',
    "float": '{"since": 1.5}',
    "string": '{"since": "7"}',
    "bool": '{"since": true}',
    "negative": '{"since": -1}',
    "huge": '{"since": ' + "9" * 400 + "}",
    "unknown field": '{"since": 0, "\\ud800\u202e": 1}',
    "not json": "{since: 1}",
    "not utf-8": b"\xff\xfe{}",
}


async def _close_of(url: str, message: str | bytes) -> tuple[int, str]:
    async with websockets.connect(f"{url}/ws/releases/r1") as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def test_hostile_first_messages_close_with_4400_and_a_reason(nats_server, caplog) -> None:
    caplog.set_level(logging.ERROR)
    async with running_notifier(nats_server.url) as url:
        for name, message in HOSTILE.items():
            code, reason = await _close_of(url, message)
            assert code == 4400 and reason, (name, code, reason)
        for query in ("since=1e3", "since=%D9%A3", "since=99999999999999999999", "since=-0"):
            async with websockets.connect(f"{url}/ws/releases/r1?{query}") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4400, query
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_well_formed_first_messages_still_work(bus, nats_server) -> None:
    events = release_history("r1", hosts=("a",))
    async with running_notifier(nats_server.url) as url:
        await append(bus, events[:4])
        for message in (json.dumps({"since": 2}), b'{"since": 2}', '  {"since" : 2 }\n'):
            async with websockets.connect(f"{url}/ws/releases/r1") as ws:
                await ws.send(message)
                frames = await receive_events(ws, 2)
                assert versions(frames) == [3, 4]
        async with websockets.connect(f"{url}/ws/releases/r1") as ws:
            await ws.send("{}")  # no since: live from now, so the next event is the first frame
            await append(bus, events[4:5])
            (frame,) = await receive_events(ws, 1)
            assert versions([frame]) == [5]
