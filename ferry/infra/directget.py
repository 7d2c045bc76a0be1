"""Reading a stream without a consumer: JetStream's batched direct get (NATS >= 2.11).

One request to ``$JS.API.DIRECT.GET.<stream>`` with ``next_by_subj`` and ``batch`` answers with
up to ``batch`` messages on the subject from a sequence on, then an end-of-batch status saying
how many more wait. Any replica answers; nothing is created on the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ferry.domain.errors import StoreUnavailable

TIMEOUT = 5.0


async def batch(
    nc: Client, stream: str, subject: str, seq: int, size: int, *, what: str = "store"
) -> tuple[list[Msg], bool]:
    """Up to ``size`` messages on ``subject`` from ``seq`` on, and whether more wait after them."""
    request = json.dumps({"seq": seq, "next_by_subj": subject, "batch": size}).encode()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=size + 1)
    page: list[Msg] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
        async with asyncio.timeout(TIMEOUT):
            while True:
                msg = await sub.next_msg(timeout=TIMEOUT)
                status = (msg.headers or {}).get("Status")
                if status is None:
                    page.append(msg)
                    continue
                if status == "204":  # end of batch
                    return page, int((msg.headers or {}).get("Nats-Num-Pending", "0") or 0) > 0
                if status == "404":
                    return page, False
                raise StoreUnavailable(f"{what} read failed: {status} {msg.headers}")
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise StoreUnavailable(f"{what} did not answer a read") from exc
    except nats.errors.ConnectionClosedError as exc:
        raise StoreUnavailable(f"{what} connection closed") from exc
    finally:
        try:
            await sub.unsubscribe()
        except (nats.errors.BadSubscriptionError, nats.errors.ConnectionClosedError):
            pass


async def messages(
    nc: Client, stream: str, subject: str, seq: int = 1, size: int = 256, *, what: str = "store"
) -> AsyncIterator[Msg]:
    """Every message on ``subject`` from ``seq`` up to now, then stop."""
    seq = max(seq, 1)
    while True:
        page, more = await batch(nc, stream, subject, seq, size, what=what)
        for msg in page:
            yield msg
        if not more or not page:
            return
        seq = int((page[-1].headers or {})["Nats-Sequence"]) + 1
