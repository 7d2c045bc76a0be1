"""Connection to NATS and the JetStream resources every service shares (idempotent set-up)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from ferry.artifacts import ArtifactStore
from ferry.commands import Histories
from ferry.envlock import EnvLocks
from ferry.errors import StoreUnavailable
from ferry.eventstore import EventStore

WORK_STREAM = "FERRY_WORK"
WORK_PREFIX = "ferry.work"
RECENT_WORK = 60.0


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
    histories: Histories = field(init=False)
    locks: EnvLocks = field(init=False)
    """One release at a time per environment (``ferry.envlock``)."""
    _published: dict[str, float] = field(init=False, default_factory=dict)
    """Every release's state this process works on, caught up from the store on each read."""

    def __post_init__(self) -> None:
        self.histories = Histories(self.events)
        self.locks = EnvLocks(self.js, replicas=self.replicas)

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
        """Queue one work item; the same ``msg_id`` within the window is queued once.

        The server de-duplicates by ``Nats-Msg-Id`` for an hour; this process skips the round
        trip for an id it published in the last minute (reactions ask for the same work often).
        """
        now = time.monotonic()
        if now - self._published.get(msg_id, -RECENT_WORK) < RECENT_WORK:
            return
        await self.js.publish(
            f"{WORK_PREFIX}.{kind}",
            json.dumps(body).encode(),
            stream=WORK_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )
        if len(self._published) > 10_000:
            self._published = {k: t for k, t in self._published.items() if now - t < RECENT_WORK}
        self._published[msg_id] = now

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
