"""Outgoing webhook delivery, in the notifier process.

Two durable consumers:

1. ``webhooks`` on the events stream routes each event: it finds the enabled webhooks whose
   filter takes it (the release's project comes from its ReleaseRequested, loaded once and
   cached) and queues one work item per webhook on ``ferry.work.webhook``, ``Nats-Msg-Id``
   ``webhook:<id>:<seq>``. Then the event is acked: the stream never waits on a receiver.
2. ``webhook-delivery`` on the work stream posts one item. A network error, 5xx or 429 naks it
   with the next backoff delay; another 4xx, or the last attempt, gives up (term).

Why a work item per delivery rather than a retry table polled by a loop: JetStream already
keeps, redelivers and delays work for every other ferry service (nak with delay), it hands
an item to one notifier at a time when several run, and a failing webhook only parks its own
items, so it blocks neither other webhooks nor the stream. The table ``webhook_deliveries``
(one row per webhook and event seq) records attempts and outcome, and is what makes delivery
idempotent: an item whose row is ``delivered`` or ``failed`` is acked without posting, so a
redelivered event or work item never posts twice once it succeeded (or was given up).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from ferry.db import repo
from ferry.domain import webhooks
from ferry.domain.events import UnknownEvent, decode, utcnow
from ferry.domain.release import ReleaseState, evolve
from ferry.domain.work import WebhookWork
from ferry.infra import metrics, subjects
from ferry.infra.bus import WORK_STREAM, Bus
from ferry.infra.eventstore import EVENTS_STREAM, SUBJECT_PREFIX
from ferry.infra.secrets import SecretBox
from ferry.infra.settings import Settings
from ferry.infra.worker import Permanent, Transient, run_consumer

log = logging.getLogger("ferry.notifier.webhooks")

WEBHOOK_WORK = subjects.WEBHOOK_WORK.removeprefix(f"{subjects.WORK_PREFIX}.")  # the kind: "webhook"
ROUTER = subjects.WEBHOOK_ROUTER
SENDER = subjects.WEBHOOK_SENDER
ACK_WAIT = 30.0  # > the 10 s request timeout; run_consumer sends progress every third of it
MAX_ANSWER = 4096  # bytes of a receiver's answer read (DingTalk/Feishu put their error code there)

R = TypeVar("R")


@dataclass(frozen=True)
class WebhookConfig:
    retry_delays: tuple[float, ...] = webhooks.RETRY_DELAYS
    """Seconds before each retry; attempts = len + 1 (default 6 attempts over ~5 minutes)."""
    timeout: float = 10.0
    public_url: str | None = None
    concurrency: int = 16
    cache_size: int = 1024

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        return cls(
            retry_delays=settings.webhook_retry_delays,
            timeout=settings.webhook_timeout,
            public_url=settings.public_url,
            concurrency=settings.webhook_concurrency,
        )


def _describe(exc: Exception, url: str) -> str:
    """A network error for the record and the log, without the URL (it may carry a token)."""
    text = str(exc) or type(exc).__name__
    parts = urlsplit(url)
    for secret_part in (url, parts.query, parts.path):
        if secret_part and len(secret_part) > 1:
            text = text.replace(secret_part, "…")
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass
class Deliverer:
    bus: Bus
    sessions: sessionmaker[Session]
    box: SecretBox
    http: httpx.AsyncClient
    config: WebhookConfig = field(default_factory=WebhookConfig)
    _states: OrderedDict[str, tuple[int, ReleaseState]] = field(default_factory=OrderedDict)

    async def _db(self, fn: Callable[..., R], *args: Any, write: bool = False) -> R:
        def work() -> R:
            session: Session
            with self.sessions() as session, session.begin():
                if write:
                    session.connection(execution_options={"ferry_write": True})
                return fn(session, *args)

        return await asyncio.to_thread(work)

    async def _state_at(self, release_id: str, seq: int) -> ReleaseState:
        """The release as ``evolve`` leaves it right after the event at ``seq`` (one fold, cached:
        routing follows the stream in order, so usually only this event is new)."""
        cached = self._states.get(release_id)
        if cached is not None and cached[0] < seq:
            after, state = cached
        else:
            after, state = 0, ReleaseState(release_id)
        for stored in await self.bus.events.load(release_id, after=after):
            if stored.seq > seq:
                break
            state, after = evolve(state, stored.event), stored.seq
        self._states[release_id] = (after, state)
        self._states.move_to_end(release_id)
        while len(self._states) > self.config.cache_size:
            self._states.popitem(last=False)
        return state

    # --- 1. route an event to the webhooks that take it -------------------------------------
    async def route(self, msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except (UnknownEvent, ValidationError, ValueError) as exc:
            raise Permanent(f"undecodable event: {exc}") from exc
        seq = msg.metadata.sequence.stream
        candidates = webhooks.interested(await self._db(repo.webhook_routes), event.type, event.at)
        if not candidates:
            return
        state = await self._state_at(event.release_id, seq)
        if state.status == "new":
            log.warning("event of a release without a request; skipped", extra={"seq": seq})
            return
        release = webhooks.ReleaseInfo.of(state)
        for route in candidates:
            if webhooks.wants(route, event.type, release.project, event.at):
                work = WebhookWork(
                    webhook=route.id, seq=seq, event=event.model_dump(mode="json"), release=release.as_json()
                )
                await self.bus.queue(subjects.WEBHOOK_WORK, work)

    # --- 2. deliver one event to one webhook ---------------------------------------------------
    def _load(
        self, session: Session, webhook_id: int, seq: int
    ) -> tuple[repo.WebhookTarget | None, repo.WebhookDeliveryInfo | None]:
        return (
            repo.webhook_target(session, self.box, webhook_id),
            repo.get_webhook_delivery(session, webhook_id, seq),
        )

    async def _post(self, out: webhooks.Outgoing) -> tuple[int, bytes]:
        async with self.http.stream("POST", out.url, content=out.body, headers=out.headers) as response:
            answer = b""
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) >= MAX_ANSWER:
                    break
            return response.status_code, answer[:MAX_ANSWER]

    async def deliver(self, msg: Msg) -> None:
        item = WebhookWork.parse(msg.data)  # malformed: MalformedWork, terminated by the consumer loop
        webhook_id, seq = item.webhook, item.seq
        try:
            event = decode(item.event)
            release = webhooks.ReleaseInfo(**item.release)
        except (TypeError, ValueError, UnknownEvent, ValidationError) as exc:
            raise Permanent(f"malformed webhook work item: {exc}") from exc
        target, done = await self._db(self._load, webhook_id, seq)
        if target is None or not target.enabled:
            return  # deleted or disabled since the event was routed
        if done is not None and done.status in ("delivered", "failed"):
            return  # already delivered (or given up): never post twice
        now = utcnow()
        out = webhooks.render(
            target.kind,
            webhook_id=target.id,
            url=target.url,
            event=event,
            release=release,
            seq=seq,
            secret=target.secret,
            now=now,
            public_url=self.config.public_url,
        )
        code: int | None = None
        try:
            code, answer = await self._post(out)
            outcome, why = webhooks.verdict(target.kind, code, answer)
        except httpx.TransportError as exc:  # connect, read, timeouts, protocol errors
            outcome, why = "retry", _describe(exc, target.url)
        except httpx.HTTPError as exc:
            outcome, why = "give_up", _describe(exc, target.url)

        attempts = (done.attempts if done else 0) + 1
        delay = webhooks.retry_delay(attempts, self.config.retry_delays) if outcome == "retry" else None
        if outcome == "retry" and delay is None:
            outcome, why = "give_up", f"{why} (after {attempts} attempts)"
        status = {"delivered": "delivered", "retry": "retrying", "give_up": "failed"}[outcome]
        metrics.WEBHOOK_DELIVERIES.labels(target.kind, status).inc()
        await self._db(
            lambda s: repo.record_webhook_attempt(
                s,
                webhook_id,
                seq,
                release_id=release.id,
                event_type=event.type,
                status=status,
                status_code=code,
                error=why,
                next_attempt_at=now + timedelta(seconds=delay) if delay is not None else None,
            ),
            write=True,
        )
        context = {"webhook": target.name, "seq": seq, "attempt": attempts}
        if status == "delivered":
            log.info("webhook delivered", extra=context)
        elif status == "retrying":
            raise Transient(f"webhook {target.name}: {why}", delay=delay or 0.0)
        else:
            log.warning("webhook given up", extra={**context, "why": why})
            raise Permanent(f"webhook {target.name}: {why}")


async def run(
    bus: Bus,
    sessions: sessionmaker[Session],
    box: SecretBox,
    stop: asyncio.Event,
    config: WebhookConfig | None = None,
) -> None:
    """Route and deliver until ``stop`` is set."""
    config = config or WebhookConfig.from_settings(Settings.from_env())
    async with httpx.AsyncClient(timeout=config.timeout, follow_redirects=False) as http:
        deliverer = Deliverer(bus, sessions, box, http, config)
        # The router reads the stream from its start the first time; routes skip events older
        # than their webhook, so a notifier upgraded on an old stream posts no history.
        events = f"{SUBJECT_PREFIX}.>"
        async with asyncio.TaskGroup() as tasks:  # one consumer failing stops the other
            tasks.create_task(
                run_consumer(
                    bus.js,
                    EVENTS_STREAM,
                    ROUTER,
                    events,
                    deliverer.route,
                    stop,
                    concurrency=4,
                    ack_wait=ACK_WAIT,
                )
            )
            tasks.create_task(
                run_consumer(
                    bus.js,
                    WORK_STREAM,
                    SENDER,
                    subjects.WEBHOOK_WORK,
                    deliverer.deliver,
                    stop,
                    concurrency=config.concurrency,
                    ack_wait=ACK_WAIT,
                )
            )
