"""Connection to NATS and the JetStream resources every service shares (idempotent set-up)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from ferry.artifacts import ArtifactStore
from ferry.errors import StoreUnavailable
from ferry.eventstore import EventStore

WORK_STREAM = "FERRY_WORK"
WORK_PREFIX = "ferry.work"


async def connect(url: str, *, name: str) -> Client:
    try:
        return await nats.connect(
            [u.strip() for u in url.split(",") if u.strip()],  # a cluster: comma-separated URLs
            name=name,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
        )
    except (OSError, nats.errors.NoServersError, nats.errors.TimeoutError) as exc:
        raise StoreUnavailable(f"cannot reach NATS at {url}: {exc}") from exc


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    events: EventStore
    artifacts: ArtifactStore
    replicas: int = 1

    async def setup(self) -> None:
        await self.events.setup()
        await self.artifacts.setup()
        config = api.StreamConfig(
            name=WORK_STREAM,
            subjects=[f"{WORK_PREFIX}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            # Work for one release step is asked for again after every event; the
            # window makes repeats within it free.
            duplicate_window=3600.0,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def publish_work(self, kind: str, msg_id: str, body: dict[str, object]) -> None:
        """Queue one work item; the same ``msg_id`` within the window is queued once."""
        await self.js.publish(
            f"{WORK_PREFIX}.{kind}",
            json.dumps(body).encode(),
            stream=WORK_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError):
            pass


async def open_bus(url: str, *, name: str, setup: bool = True, replicas: int | None = None) -> Bus:
    """Connect and (idempotently) create the streams; ``replicas`` defaults to FERRY_STREAM_REPLICAS or 1."""
    if replicas is None:
        replicas = int(os.environ.get("FERRY_STREAM_REPLICAS") or 1)
    nc = await connect(url, name=name)
    js = nc.jetstream(timeout=10)
    bus = Bus(nc, js, EventStore(js, replicas=replicas), ArtifactStore(js, replicas=replicas), replicas)
    if setup:
        await bus.setup()
    else:
        await bus.artifacts.setup()
    return bus
