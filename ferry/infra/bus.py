"""Connection to NATS and the JetStream resources every service shares (idempotent set-up)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from ferry.domain.errors import StoreUnavailable
from ferry.domain.work import WorkItem, canonical
from ferry.infra import tracing
from ferry.infra.artifacts import ArtifactStore
from ferry.infra.commands import Histories
from ferry.infra.envlock import EnvLocks
from ferry.infra.eventstore import EventStore, StoredEvent
from ferry.infra.natsauth import OBJECTS, Credential, credential_path, event_types, from_url, without_userinfo
from ferry.infra.openreleases import OpenReleases, scan_stream
from ferry.infra.settings import Settings
from ferry.infra.signing import (
    SigningEventStore,
    VerifyingEventStore,
    WorkSigner,
    ensure_signing_key,
    load_verify_key,
    require_signed_work,
)
from ferry.infra.subjects import ALL_WORK, EVENTS_STREAM, WORK_PREFIX, WORK_STREAM

__all__ = ["WORK_PREFIX", "WORK_STREAM", "Bus", "follow", "open_bus", "reconnects"]
RECENT_WORK = 60.0
STREAMS_TIMEOUT = 60.0
MANAGING = (None, "gateway", "admin")
"""Identities that create and update the streams (None: a server without authentication)."""
VERIFYING = ("builder", "agent")
"""Identities that verify the gateway's signature on work and plans before doing anything."""
log = logging.getLogger("ferry.infra.bus")


class Reconnects:
    """Tells a connection's long-lived readers that it came back (after nats-server restarted).

    Durable pull consumers need nothing (the server kept them on disk); a reader of an ordered
    consumer starts again from its own position instead of waiting for missed heartbeats.
    """

    def __init__(self) -> None:
        self.count = 0
        self._next = asyncio.Event()

    def happened(self) -> None:
        self.count += 1
        self._next.set()
        self._next = asyncio.Event()

    async def wait(self) -> None:
        """Return at the next reconnect after this call."""
        await self._next.wait()


_RECONNECTS: weakref.WeakKeyDictionary[Client, Reconnects] = weakref.WeakKeyDictionary()


def reconnects(nc: Client) -> Reconnects:
    """The reconnect signal of ``nc`` (one per connection; never set for one made elsewhere)."""
    if nc not in _RECONNECTS:
        _RECONNECTS[nc] = Reconnects()
    return _RECONNECTS[nc]


async def follow(bus: Bus, subject: str, from_seq: int = 1) -> AsyncIterator[StoredEvent]:
    """``bus.events.follow`` that starts again after the last event it gave when NATS comes back.

    An ordered consumer notices a restarted nats-server only after two missed heartbeats (10 s
    or more); this reader subscribes again at once, from where it was.
    """
    back = reconnects(bus.nc)
    following = from_seq
    while True:
        stream = bus.events.follow(subject, following)
        came_back = asyncio.ensure_future(back.wait())
        step: asyncio.Future[StoredEvent] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(stream))
                await asyncio.wait({step, came_back}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    log.info("NATS is back: following again", extra={"subject": subject, "from": following})
                    break
                try:
                    stored = step.result()
                except StopAsyncIteration:
                    return
                following = stored.seq + 1
                yield stored
        finally:
            came_back.cancel()
            pending = [f for f in (step, came_back) if f is not None]
            for f in pending:
                f.cancel()
            # a read still in flight when the reader is closed (the connection draining at
            # shutdown) ends with an exception nobody else would ever look at
            await asyncio.gather(*pending, return_exceptions=True)
            if (close := getattr(stream, "aclose", None)) is not None:  # unsubscribe now, not at GC
                await close()


async def connect(
    url: str, *, name: str, credential: Credential | None = None, ca: Path | None = None
) -> Client:
    """Connect as ``credential``'s identity (else the one in ``url``'s userinfo, else anonymously).

    Waits for a server that is not there yet (nats-py tries again every half second), and
    reconnects for ever after a connection is lost: a restarted nats-server restarts no service.
    """
    credential = credential or from_url(url)
    servers = [u.strip() for u in without_userinfo(url).split(",") if u.strip()]  # a cluster: comma-separated
    auth: dict[str, Any] = {}
    if ca is not None:  # tls:// servers signed by a private CA (FERRY_NATS_CA)
        auth["tls"] = ssl.create_default_context(cafile=str(ca))
    if credential is not None:
        auth |= {
            "user": credential.user,
            "password": credential.password,
            "inbox_prefix": credential.inbox_prefix,
        }
    who = f"as {credential.user!r}" if credential else "without credentials (set FERRY_NATS_CREDS)"
    connecting = True
    signal = Reconnects()
    last_said: dict[str, Any] = {"error": "", "at": -60.0}

    async def on_error(exc: Exception) -> None:
        # nats-py retries a refused first connect forever (max_reconnect_attempts=-1): a wrong
        # or missing credential must stop the service with a message instead.
        if connecting and "authorization violation" in str(exc).lower():
            raise StoreUnavailable(f"NATS at {without_userinfo(url)} refused the connection {who}: {exc}")
        said, now = str(exc) or type(exc).__name__, time.monotonic()
        if said != last_said["error"] or now - last_said["at"] > 30:  # not twice a second while away
            log.error("nats error", extra={"error": said, "address": without_userinfo(url)})
            last_said.update(error=said, at=now)

    async def on_disconnect() -> None:
        if not connecting:
            log.warning("lost NATS; reconnecting", extra={"address": without_userinfo(url)})

    async def on_reconnect() -> None:
        log.warning("reconnected to NATS", extra={"address": without_userinfo(url)})
        last_said.update(error="", at=-60.0)
        signal.happened()

    try:
        nc = await nats.connect(
            servers,
            name=name,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **auth,
        )
    except (OSError, nats.errors.NoServersError, nats.errors.TimeoutError) as exc:
        raise StoreUnavailable(f"cannot reach NATS at {without_userinfo(url)}: {exc}") from exc
    except nats.errors.Error as exc:
        raise StoreUnavailable(
            f"NATS at {without_userinfo(url)} refused the connection {who}: {exc}"
        ) from exc
    connecting = False
    _RECONNECTS[nc] = signal
    return nc


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    events: EventStore
    artifacts: ArtifactStore
    replicas: int = 1
    identity: str | None = None
    """The NATS identity this process connected as (``ferry.infra.natsauth``)."""
    signer: WorkSigner | None = None
    """The gateway's key: every work item it publishes is signed."""
    histories: Histories = field(init=False)
    locks: EnvLocks = field(init=False)
    """One release at a time per environment (``ferry.infra.envlock``)."""
    open_releases: OpenReleases = field(init=False)
    """The releases without a terminal event (``ferry.infra.openreleases``)."""
    _published: dict[str, float] = field(init=False, default_factory=dict)
    """Every release's state this process works on, caught up from the store on each read."""

    def __post_init__(self) -> None:
        self.histories = Histories(self.events)
        self.locks = EnvLocks(self.js, replicas=self.replicas)
        self.open_releases = OpenReleases(self.js, replicas=self.replicas)

    async def setup(self) -> None:
        await self.events.setup()
        await self.artifacts.setup()
        config = api.StreamConfig(
            name=WORK_STREAM,
            subjects=[ALL_WORK],
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
        await self.open_releases.setup(lambda: scan_stream(self.js))

    async def queue(self, subject: str, work: WorkItem) -> None:
        """Queue one typed work item (``ferry.domain.work``) on ``subject`` (``ferry.infra.subjects``)."""
        await self.publish_work(subject.removeprefix(f"{WORK_PREFIX}."), work.msg_id, work.canonical())

    async def publish_work(self, kind: str, msg_id: str, body: dict[str, object] | bytes) -> None:
        """Queue one work item on ``ferry.work.<kind>``; the same ``msg_id`` within the window is
        queued once. A dict body is sent in its canonical bytes (what the signature covers).

        The server de-duplicates by ``Nats-Msg-Id`` for an hour; this process skips the round
        trip for an id it published in the last minute (reactions ask for the same work often).
        """
        now = time.monotonic()
        if now - self._published.get(msg_id, -RECENT_WORK) < RECENT_WORK:
            return
        subject = f"{WORK_PREFIX}.{kind}"
        data = body if isinstance(body, bytes) else canonical(body)
        headers = {"Nats-Msg-Id": msg_id}
        if self.signer is not None:
            headers.update(self.signer.headers(subject, msg_id, data))
        tracing.inject(headers)  # the release's trace goes on with the work (not signed: not the work)
        await self.js.publish(subject, data, stream=WORK_STREAM, headers=headers)
        if len(self._published) > 10_000:
            self._published = {k: t for k, t in self._published.items() if now - t < RECENT_WORK}
        self._published[msg_id] = now

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError):
            pass


def _credential(url: str, settings: Settings, identity: str | None) -> Credential | None:
    if settings.nats_creds is not None:
        return Credential.read(settings.nats_creds)
    if (in_url := from_url(url)) is not None:
        return in_url
    if identity is not None and (path := credential_path(settings.credentials_dir, identity)).exists():
        return Credential.read(path)
    return None


async def _wait_for_streams(js: JetStreamContext) -> None:
    """Identities that may not create streams wait (bounded) for the gateway to create them."""
    deadline = time.monotonic() + STREAMS_TIMEOUT
    for stream in (EVENTS_STREAM, WORK_STREAM, OBJECTS):
        while True:
            try:
                await js.stream_info(stream)
                break
            except nats.js.errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"stream {stream} does not exist: is the gateway running?"
                    ) from None
                log.info("waiting for the gateway to create the streams", extra={"stream": stream})
                await asyncio.sleep(0.5)


async def open_bus(
    url: str,
    *,
    name: str,
    setup: bool = True,
    replicas: int | None = None,
    settings: Settings | None = None,
    identity: str | None = None,
) -> Bus:
    """Connect as this process's NATS identity and (idempotently) create the streams.

    The credential is ``FERRY_NATS_CREDS``, else the userinfo of ``url``, else ``identity``'s file
    in the credentials directory. The identity decides the rest: the gateway signs work and
    plans, builder and agents verify them, the store appends only the identity's event types,
    and only the gateway (or admin) creates streams. ``replicas`` defaults to
    ``FERRY_STREAM_REPLICAS``.
    """
    settings = settings or Settings.from_env()
    if replicas is None:
        replicas = settings.stream_replicas
    credential = _credential(url, settings, identity)
    who = credential.user if credential is not None else None
    nc = await connect(url, name=name, credential=credential, ca=settings.nats_ca)
    js = nc.jetstream(timeout=10)
    allowed = event_types(who) if who else None
    events: EventStore
    signer: WorkSigner | None = None
    if who == "gateway":
        signer = ensure_signing_key(settings.signing_key_path)
        events = SigningEventStore(js, signer, replicas=replicas, allowed_types=allowed, identity=who)
    elif who in VERIFYING:
        verifier = load_verify_key(settings.public_key_path)
        events = VerifyingEventStore(js, verifier, replicas=replicas, allowed_types=allowed, identity=who)
        require_signed_work(nc, WORK_STREAM, verifier)
    else:
        if who is None:
            log.warning("connected to NATS without credentials", extra={"service": name})
        events = EventStore(js, replicas=replicas, allowed_types=allowed, identity=who or "")
    bus = Bus(nc, js, events, ArtifactStore(js, replicas=replicas), replicas, who, signer)
    try:
        if setup and who in MANAGING:
            await bus.setup()
        else:
            if who not in MANAGING:
                await _wait_for_streams(js)
            await bus.artifacts.setup()
    except BaseException:
        await nc.close()
        raise
    return bus
