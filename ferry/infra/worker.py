"""Pull-consumer loops shared by the services: ack after success, nak transient, term permanent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from ferry.domain.errors import StoreUnavailable
from ferry.domain.work import MalformedWork
from ferry.infra import subjects, tracing
from ferry.infra.signing import UntrustedWork, work_verifier

log = logging.getLogger("ferry.infra.worker")


class Transient(Exception):
    """Try again later (the message is nak'ed with a delay)."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message)
        self.delay = delay


class Permanent(Exception):
    """Never try again (the message is terminated); the handler has recorded why."""


Handler = Callable[[Msg], Awaitable[None]]
T = TypeVar("T")

ACK_WAIT = 10.0
"""How long a work item held by a worker that stopped answering waits before another takes it.

Handlers that run longer keep their item with in-progress acks every ``HEARTBEAT`` seconds,
so only the items of a killed (or cut-off) worker are delivered again, after at most this."""
HEARTBEAT = 3.0
NATS_AWAY = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
)
"""What a fetch raises while nats-server (or JetStream on it) is away; the loop waits and goes on."""


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    subject: str | Sequence[str],
    *,
    ack_wait: float = ACK_WAIT,
    max_deliver: int = -1,
    deliver_policy: api.DeliverPolicy = api.DeliverPolicy.ALL,
) -> None:
    """Create the durable pull consumer; ``subject`` may be several filter subjects."""
    subjects = [subject] if isinstance(subject, str) else list(subject)
    config = api.ConsumerConfig(
        durable_name=durable,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        deliver_policy=deliver_policy,
        max_ack_pending=1000,
    )
    try:
        # On an existing durable this updates the editable fields (an older, longer ack wait).
        await js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError as exc:
        log.warning("consumer kept its config", extra={"consumer": durable, "why": str(exc)})


async def _heartbeat(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def run_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    subject: str | Sequence[str],
    handler: Handler,
    stop: asyncio.Event,
    *,
    concurrency: int = 1,
    ack_wait: float = ACK_WAIT,
    max_deliver: int = -1,
) -> None:
    """Fetch from a durable pull consumer until ``stop`` is set, running up to ``concurrency`` handlers."""
    await ensure_consumer(js, stream, durable, subject, ack_wait=ack_wait, max_deliver=max_deliver)
    sub = await js.pull_subscribe_bind(durable, stream=stream)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    # Builder and agents take only work the gateway signed (ferry.infra.signing); their plans are
    # checked where the release is read (VerifyingEventStore), which raises UntrustedWork too.
    verifier = work_verifier(js._nc, stream)

    async def one(msg: Msg) -> None:
        beat = asyncio.create_task(_heartbeat(msg, min(ack_wait / 3, HEARTBEAT)))
        try:
            if verifier is not None:
                verifier.verify_work(msg.subject, msg.headers, msg.data)
            with tracing.consuming(durable, msg.headers, subject=msg.subject):  # the trace it carries
                await handler(msg)
            await msg.ack()
        except UntrustedWork as exc:
            log.error(
                "refused unsigned or altered work; nothing ran",
                extra={"subject": msg.subject, "why": exc.message},
            )
            await msg.term()
        except MalformedWork as exc:  # signed, but not the shape of its kind: never again
            log.error(
                "refused malformed work; nothing ran",
                extra={"subject": msg.subject, "why": exc.message, "field": exc.field},
            )
            await msg.term()
        except Transient as exc:
            log.warning("transient failure, retrying", extra={"subject": msg.subject, "error": str(exc)})
            await msg.nak(delay=exc.delay)
        except Permanent as exc:
            log.error("permanent failure", extra={"subject": msg.subject, "error": str(exc)})
            await msg.term()
        except Exception as exc:
            # Lost NATS mid-step (nats-server restarting): again as soon as it is back; the nak is
            # sent when nats-py reconnects. Anything else waits a little longer.
            away = isinstance(exc, (nats.errors.Error, StoreUnavailable, OSError, TimeoutError))
            if isinstance(exc, (nats.errors.Error, StoreUnavailable)):  # NATS itself: no traceback to read
                log.warning("NATS away; will be redelivered", extra={"subject": msg.subject, "why": str(exc)})
            else:
                log.exception("handler crashed; will be redelivered", extra={"subject": msg.subject})
            with contextlib.suppress(Exception):
                await msg.nak(delay=0.5 if away else 5)
        finally:
            beat.cancel()
            slots.release()

    try:
        while not stop.is_set():
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                slots.release()
                continue
            except NATS_AWAY:
                slots.release()
                # nats-py reconnects by itself; the durable consumer is on the server's disk
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(one(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def serve_health(nc: Any, service: str, info: Callable[[], dict[str, Any]]) -> None:
    """Answer ``ferry.health.<service>`` requests so launchers and operators can probe workers."""

    async def reply(msg: Msg) -> None:
        await msg.respond(json.dumps({"service": service, "ok": True, **info()}).encode())

    await nc.subscribe(subjects.health(service), cb=reply)


async def retrying(
    name: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    fatal: Callable[[Exception], bool] = lambda exc: False,
    failed: Callable[[Exception], None] = lambda exc: None,
    backoff: float = 0.5,
    max_backoff: float = 5.0,
) -> T:
    """The result of ``attempt()``, tried again (with growing back-off) until it succeeds.

    ``failed`` hears every failure (to say why on a health check); one that is ``fatal`` (a
    refused credential) propagates at once. Cancel the caller to give up.
    """
    delay = backoff
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed(exc)
            if fatal(exc):
                raise
            log.warning("%s failed; retrying", name, extra={"task": name, "why": str(exc), "in": delay})
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    backoff: float = 0.5,
    max_backoff: float = 5.0,
    healthy_after: float = 30.0,
) -> None:
    """Run ``run()`` until ``stop`` is set, restarting it (with growing back-off) if it fails or ends early.

    A consumer loop that dies on an unexpected error (or while nats-server restarts) must not
    leave releases waiting for a process restart: it comes back by itself and resumes from its
    durable consumer. The back-off starts again once a run has lasted ``healthy_after`` seconds.
    """
    delay = backoff
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            await run()
            if stop.is_set():
                return
            log.warning("task ended early; restarting", extra={"task": name})
        except asyncio.CancelledError:
            raise
        except NATS_AWAY as exc:
            log.warning("task lost NATS; restarting", extra={"task": name, "error": repr(exc), "in": delay})
        except Exception:
            log.exception("task failed; restarting", extra={"task": name, "in": delay})
        if loop.time() - started > healthy_after:
            delay = backoff
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_backoff)


async def periodic(
    run: Callable[[], Awaitable[object]], every: float, stop: asyncio.Event, *, name: str = "periodic task"
) -> None:
    """Run ``run()`` now and then every ``every`` seconds until ``stop`` is set.

    A pass that fails is logged and the next one runs on time (a failed pass is not a failed
    loop); run it under ``supervise`` for anything else.
    """
    while not stop.is_set():
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pass failed; next one on schedule", extra={"task": name, "in": every})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
