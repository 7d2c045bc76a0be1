"""Every Prometheus family ferry exposes, defined once (``prometheus-client``).

Each service process serves this module's ``REGISTRY``: the gateway and the notifier on their
HTTP apps (``/metrics``), the builder and agents on a port of their own
(``FERRY_BUILDER_METRICS_PORT`` / ``FERRY_AGENT_METRICS_PORT``, ``serve``). A process fills the
families of the work it does (the agent its host steps, the builder its builds); the others stay
at zero there. Labels are bounded enumerations only (status, step, outcome, webhook kind, queue
name): never a release id, a host name or a project.

The notifier's fan-out counters are kept by hand on its hot path (``services/notifier/metrics.py``
renders them); their names are listed here too (``NOTIFIER_FAMILIES``) so that this module knows
every name a dashboard may ask for (``sample_names``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import start_http_server

log = logging.getLogger("ferry.infra.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series beside each family
REGISTRY = CollectorRegistry()
ProcessCollector(namespace="ferry", registry=REGISTRY)  # ferry_process_cpu_seconds_total, memory, fds

FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LONG = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
WAIT = (0.0, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0)

# --- releases (the orchestrator, in the gateway) -------------------------------------------------
RELEASES = Counter(
    "ferry_releases", "Releases that ended, by terminal status.", ["status"], registry=REGISTRY
)
RELEASE_SECONDS = Histogram(
    "ferry_release_duration_seconds",
    "Time from a release's request to its terminal event, by status.",
    ["status"],
    buckets=LONG,
    registry=REGISTRY,
)
LOCK_WAIT_SECONDS = Histogram(
    "ferry_lock_wait_seconds",
    "Time a release waited in its environment's queue before it held the lock (0: the lock was free).",
    buckets=WAIT,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "ferry_queue_depth",
    "Messages waiting or in flight: work items per work queue (FERRY_WORK), "
    "events not yet acknowledged per durable consumer (FERRY_EVENTS). Read from JetStream on scrape.",
    ["stream", "queue"],
    registry=REGISTRY,
)

# --- builder ---------------------------------------------------------------------------------
BUILD_SECONDS = Histogram(
    "ferry_build_duration_seconds",
    "Time a builder spent on one build work item that ended it, by outcome (packaged, reused, failed).",
    ["outcome"],
    buckets=LONG,
    registry=REGISTRY,
)

# --- agents ----------------------------------------------------------------------------------
HOST_STEP_SECONDS = Histogram(
    "ferry_host_step_duration_seconds",
    "Duration of one host step (upload, link, pre_release, activate, restart, health, post_release), "
    "by outcome (ok, failed).",
    ["step", "outcome"],
    buckets=STEP,
    registry=REGISTRY,
)
UPLOAD_BYTES = Counter(
    "ferry_upload_bytes",
    "Bytes agents sent to hosts for artifacts, by method (full archive, delta).",
    ["method"],
    registry=REGISTRY,
)
SAVED_BYTES = Counter(
    "ferry_upload_saved_bytes",
    "Artifact bytes agents did not send, by reason (host_cache: the host held the archive; "
    "extracted: the release directory held it; delta: the part a delta left out).",
    ["reason"],
    registry=REGISTRY,
)

# --- notifier: webhooks (the WebSocket fan-out's families: NOTIFIER_FAMILIES) -----------------
WEBHOOK_DELIVERIES = Counter(
    "ferry_webhook_deliveries",
    "Webhook delivery attempts, by webhook kind and outcome (delivered, retrying, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)

# --- every process: the event store ------------------------------------------------------------
APPEND_SECONDS = Histogram(
    "ferry_eventstore_append_seconds",
    "Latency of one event-store append (all the events of one decision, acknowledged by JetStream).",
    buckets=FAST,
    registry=REGISTRY,
)
READ_SECONDS = Histogram(
    "ferry_eventstore_read_seconds",
    "Latency of one event-store history read (batched direct gets of one subject filter).",
    buckets=FAST,
    registry=REGISTRY,
)
APPEND_CONFLICTS = Counter(
    "ferry_eventstore_conflicts",
    "Appends refused because the release changed meanwhile (JetStream error 10071; decided again).",
    registry=REGISTRY,
)

NOTIFIER_FAMILIES: dict[str, tuple[str, str]] = {
    "ferry_notifier_clients": ("gauge", "WebSocket clients connected, by channel kind."),
    "ferry_notifier_connections_total": ("counter", "WebSocket connections accepted."),
    "ferry_notifier_refused_total": ("counter", "WebSocket connections refused by authorization."),
    "ferry_notifier_events_pushed_total": ("counter", "Event frames written to client sockets."),
    "ferry_notifier_events_direct_total": (
        "counter",
        "Event frames written by the follower to live clients.",
    ),
    "ferry_notifier_resyncs_total": ("counter", "Clients told to resync because they fell behind."),
    "ferry_notifier_stream_head": ("gauge", "Last stream sequence the follower has fanned out."),
    "ferry_notifier_push_latency_seconds": (
        "histogram",
        "WebSocket lag: event time to live send, per client frame.",
    ),
}
"""The notifier's hand-kept families (name -> type, help), rendered by ``services/notifier/metrics.py``."""

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled", "rejected")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def sample_names() -> set[str]:
    """Every sample name the services may expose: gauges by name, counters as ``_total``, histograms
    as ``_bucket``/``_sum``/``_count``."""
    names: set[str] = set()
    families = [(f.name, f.type) for f in REGISTRY.collect()]
    families += [(name, kind) for name, (kind, _help) in NOTIFIER_FAMILIES.items() if kind != "counter"]
    names.update(name for name, kind in NOTIFIER_FAMILIES.items() if kind[0] == "counter")  # with _total
    for name, kind in families:
        suffixes = SUFFIXES.get(kind)
        names.update([name + s for s in suffixes] if suffixes else [name])  # a counter is only its _total
    return names


def exposition() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


def serve(port: int, host: str, what: str) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a thread (the builder's and agents' own port).

    ``port`` 0 serves nothing. A port already taken (two agents on one machine given the same
    port) is logged and the service runs on without metrics.
    """
    if port <= 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.error(
            "cannot serve metrics", extra={"service": what, "address": f"{host}:{port}", "why": str(exc)}
        )
        return None
    log.info("serving metrics", extra={"service": what, "address": f"{host}:{port}"})
    return server


# --- observations the services make ------------------------------------------------------------
@contextmanager
def timed(histogram: Histogram) -> Iterator[None]:
    """Observe the time the block took (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


def release_ended(
    release_id: str, status: str, requested_at: datetime | None, finished_at: datetime | None
) -> None:
    """One release reached a terminal status (counted where its terminal event is consumed, once
    per process even when the event is delivered again)."""
    if status not in TERMINAL_STATUSES or release_id in _ended:
        return
    _ended[release_id] = None
    while len(_ended) > 10_000:
        _ended.popitem(last=False)
    RELEASES.labels(status).inc()
    if requested_at is not None and finished_at is not None:
        RELEASE_SECONDS.labels(status).observe(max((finished_at - requested_at).total_seconds(), 0.0))


def host_step(step: str, seconds: float, ok: bool, detail: dict[str, Any], artifact_size: int) -> None:
    """One finished host step; an upload also counts the bytes it sent and the bytes it spared."""
    HOST_STEP_SECONDS.labels(step, "ok" if ok else "failed").observe(max(seconds, 0.0))
    if step != "upload" or not ok:
        return
    sent = int(detail.get("bytes_sent") or 0)
    if sent:
        UPLOAD_BYTES.labels("delta" if detail.get("delta") else "full").inc(sent)
    if detail.get("instant") or detail.get("already_extracted"):
        SAVED_BYTES.labels("extracted").inc(artifact_size)
    elif detail.get("delta"):
        SAVED_BYTES.labels("delta").inc(max(artifact_size - sent, 0))
    elif detail.get("reused"):
        SAVED_BYTES.labels("host_cache").inc(artifact_size)


async def refresh_queue_depth(js: Any, *, work_stream: str, events_stream: str) -> None:
    """Set ``ferry_queue_depth`` from JetStream: per work subject, and per durable event consumer.

    Two requests a scrape (stream info with a subject filter, and the consumer list): what the
    gateway's NATS identity may ask. A queue seen before and now empty reads 0, not absent.
    """
    work_prefix = "ferry.work."  # ferry.infra.bus.WORK_PREFIX (the bus imports what imports this)
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            info = await js.stream_info(work_stream, subjects_filter=f"{work_prefix}>")
            work = {s.removeprefix(work_prefix): n for s, n in (info.state.subjects or {}).items()}
            consumers = await js.consumers_info(events_stream)
    except Exception as exc:  # noqa: BLE001 - a scrape while NATS is away keeps the last values
        log.warning("queue depth not read", extra={"why": repr(exc)})
        return
    events = {c.name: int(c.num_pending or 0) + int(c.num_ack_pending or 0) for c in consumers if c.name}
    for stream, values in ((work_stream, work), (events_stream, events)):
        known = {k[1] for k in _seen if k[0] == stream}
        for queue in known - values.keys():
            QUEUE_DEPTH.labels(stream, queue).set(0)
        for queue, n in values.items():
            QUEUE_DEPTH.labels(stream, queue).set(n)
            _seen.add((stream, queue))


SCRAPE_TIMEOUT = 2.0
_seen: set[tuple[str, str]] = set()
_ended: OrderedDict[str, None] = OrderedDict()
