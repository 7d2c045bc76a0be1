"""The streams in a backup: every message with its subject, sequence and headers, read with batched
direct gets (no consumer), re-published in order on restore."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext, api

from ferry.infra import directget
from ferry.infra.backup.errors import BackupError

DROPPED_HEADERS = ("Nats-Expected-",)
"""Publish-time guards stored with a message: re-published as they were, they would refuse it."""


async def refuse_unless_empty_streams(js: JetStreamContext, streams: list[str]) -> None:
    for stream in streams:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        if info.state.messages:
            raise BackupError(f"stream {stream} already holds messages: restore into an empty NATS")


DIRECT_GET_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
    }
)
"""What a direct get adds to a stored message's own headers."""


async def _read_all(js: JetStreamContext, stream: str, first: int, last: int, direct: bool) -> Any:
    """(seq, subject, headers, data) of every message from ``first`` to ``last``; no consumer."""
    if direct:  # batched: 256 messages a round trip (an object store holds many chunks)
        async for msg in directget.messages(js._nc, stream, ">", first, 256, what=f"stream {stream}"):
            headers = dict(msg.headers or {})
            seq = int(headers["Nats-Sequence"])
            if seq > last:
                return
            yield seq, headers["Nats-Subject"], headers, msg.data
        return
    for seq in range(first, last + 1):
        try:
            raw = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue  # deleted or purged (a collected object's chunks)
        yield seq, raw.subject, dict(raw.headers or {}), raw.data


async def dump_stream(js: JetStreamContext, stream: str, out: Path) -> dict[str, Any] | None:
    """Write every message of ``stream`` up to its current last sequence; its config and range."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return None
    first, last = max(int(info.state.first_seq), 1), int(info.state.last_seq)
    count = 0
    with open(out, "w", encoding="utf-8") as f:
        if info.state.messages:
            async for seq, subject, headers, data in _read_all(
                js, stream, first, last, bool(info.config.allow_direct)
            ):
                kept = {
                    k: v
                    for k, v in headers.items()
                    if k not in DIRECT_GET_HEADERS and not k.startswith(DROPPED_HEADERS)
                }
                record = {
                    "seq": seq,
                    "subject": subject,
                    "headers": kept,
                    "data": base64.b64encode(data or b"").decode(),
                }
                f.write(json.dumps(record) + "\n")
                count += 1
    return {"config": info.config.as_dict(), "first_seq": first, "last_seq": last, "messages": count}


async def load_stream(
    js: JetStreamContext, stream: str, meta: dict[str, Any], src: Path, replicas: int
) -> bool:
    """Recreate ``stream`` and re-publish its messages in order; whether every sequence was kept."""
    config = api.StreamConfig.from_response(dict(meta["config"]))
    config.num_replicas = replicas
    try:
        info = await js.stream_info(stream)
        if info.state.messages:
            raise BackupError(f"stream {stream} already holds messages: restore into an empty NATS")
        await js.update_stream(config)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
    same = True
    with open(src, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            ack = await js.publish(
                record["subject"],
                base64.b64decode(record["data"]),
                stream=stream,
                headers=record["headers"] or None,
            )
            same = same and ack.seq == record["seq"]
    return same
