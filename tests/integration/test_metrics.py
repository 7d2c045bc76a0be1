"""Issue 11 item 3: after real releases, ``/metrics`` on every service shows what each one did,
and a release's spans from gateway, builder and agent share one trace id; in one process, the
trace context travels in event and work headers (the SDK's in-memory exporter).

The whole system runs as processes (``start_system``: ``ferry up``'s launcher with its own
nats-server) with token auth on, one real sshd host, a webhook receiver and a WebSocket client
on loopback. Two releases of one commit: the first builds and sends the artifact, the second
reuses the build and finds the archive on the host. Spans come from each process's
``FERRY_TRACES_DIR`` file (the SDK's console exporter writing JSON lines).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from ferry.infra import tracing
from ferry.infra.bus import WORK_STREAM
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.worker import run_consumer
from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import register
from tests.harness.fixtures import _require_sshd
from tests.harness.sampleapp import make_sample_repo
from tests.harness.sshd import SshdHost
from tests.harness.system import System, start_system
from tests.integration.test_eventstore import requested

STEPS = ("upload", "link", "pre_release", "activate", "restart", "health", "post_release")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Receiver:
    """A webhook endpoint on loopback that answers 200 and keeps what it got."""

    def __init__(self) -> None:
        got: list[bytes] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Watcher:
    """One WebSocket client on the notifier's ``/ws/all`` for the whole run (read in a thread)."""

    def __init__(self, url: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.ws: Any = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()
        assert self.opened.wait(15) and self.ws is not None, f"no WebSocket: {self.error!r}"

    def _read(self, url: str) -> None:
        try:
            with ws_connect(url, open_timeout=10) as ws:
                self.ws = ws
                self.opened.set()
                for message in ws:
                    self.frames.append(json.loads(message))
        except Exception as exc:  # a refusal, or the connection closing at the end of the run
            self.error = exc
        finally:
            self.opened.set()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.thread.join(5)


@dataclass
class Run:
    system: System
    builder_url: str
    agent_url: str
    notifier_url: str
    traces: Path
    releases: list[str] = field(default_factory=list)
    hosts: list[SshdHost] = field(default_factory=list)
    watcher: Watcher | None = None
    seconds: float = 0.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    _require_sshd()
    tmp = tmp_path_factory.mktemp("metrics")
    builder_port, agent_port = free_port(), free_port()
    traces = tmp / "traces"
    started = time.monotonic()
    system = start_system(
        tmp / "home",
        agents=1,
        auth=True,
        extra_env={
            "FERRY_BUILDER_METRICS_PORT": str(builder_port),
            "FERRY_AGENT_METRICS_PORT": str(agent_port),
            "FERRY_TRACES_DIR": str(traces),
        },
    )
    receiver = Receiver()
    host = SshdHost(tmp / "host0")
    watcher = None
    try:
        host.start()
        result = Run(
            system,
            f"http://127.0.0.1:{builder_port}/metrics",
            f"http://127.0.0.1:{agent_port}/metrics",
            f"http://127.0.0.1:{system.settings.ws_port}/metrics",
            traces,
            hosts=[host],
        )
        sample = make_sample_repo(tmp / "sample")
        register(system, [host], sample.url, app_port=free_port())
        system.post("/api/webhooks", {"name": "ops", "url": receiver.url, "kind": "generic"}, 201)
        watcher = result.watcher = Watcher(f"{system.ws_url}/ws/all?token={system.token}")
        sample.commit("A")
        for _ in range(2):  # the same commit twice: built once, sent once
            rid = system.release("web", "prod", "main")
            assert system.wait(rid, timeout=60)["status"] == "succeeded", system.logs()
            result.releases.append(rid)
        result.seconds = time.monotonic() - started
        yield result
    finally:
        if watcher is not None:
            watcher.close()
        receiver.close()
        system.api.close()
        system.launcher.stop()
        host.stop()


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    r = httpx.get(url, headers=headers, timeout=10)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` (any others too)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def until(check: Callable[[], Samples], ok: Callable[[Samples], bool], timeout: float = 20.0) -> Samples:
    """Scrape until ``ok`` holds (some families are filled a moment after the release ends)."""
    deadline = time.monotonic() + timeout
    samples = check()
    while not ok(samples) and time.monotonic() < deadline:
        time.sleep(0.3)
        samples = check()
    return samples


@pytest.mark.sshd
def test_every_service_exposes_what_the_releases_did(run: Run) -> None:
    gateway = f"{run.system.url.rstrip('/')}/metrics"
    anonymous = httpx.get(gateway, timeout=10, follow_redirects=False)
    assert anonymous.status_code in (303, 401), "auth on: /metrics needs a token like every page"
    assert "ferry_" not in anonymous.text
    auth = {"Authorization": f"Bearer {run.system.token}"}

    gw = until(
        lambda: scrape(gateway, auth),
        lambda s: value(s, "ferry_releases_total", status="succeeded") >= 2,
    )
    assert value(gw, "ferry_releases_total", status="succeeded") == 2
    assert value(gw, "ferry_release_duration_seconds_count", status="succeeded") == 2
    assert 0 < value(gw, "ferry_release_duration_seconds_sum", status="succeeded") < run.seconds * 2
    assert value(gw, "ferry_lock_wait_seconds_count") >= 2  # each release took the environment's lock
    assert ("ferry_queue_depth", frozenset({("stream", "FERRY_EVENTS"), ("queue", "orchestrator")})) in gw
    assert value(gw, "ferry_eventstore_append_seconds_count") > 0
    assert value(gw, "ferry_eventstore_read_seconds_count") > 0

    builder = scrape(run.builder_url)
    assert value(builder, "ferry_build_duration_seconds_count", outcome="packaged") == 1
    assert value(builder, "ferry_build_duration_seconds_count", outcome="reused") == 1
    assert value(builder, "ferry_build_duration_seconds_sum", outcome="packaged") > 0
    assert value(builder, "ferry_eventstore_append_seconds_count") > 0

    agent = scrape(run.agent_url)
    for step in STEPS:
        assert value(agent, "ferry_host_step_duration_seconds_count", step=step, outcome="ok") == 2, step
    assert value(agent, "ferry_host_step_duration_seconds_count", outcome="failed") == 0
    assert value(agent, "ferry_upload_bytes_total", method="full") > 0  # the first release sent it
    assert value(agent, "ferry_upload_saved_bytes_total", reason="host_cache") > 0  # the second did not

    notifier = until(
        lambda: scrape(run.notifier_url),
        lambda s: value(s, "ferry_webhook_deliveries_total", kind="generic", outcome="delivered") >= 1,
    )
    assert value(notifier, "ferry_webhook_deliveries_total", kind="generic", outcome="delivered") >= 1
    assert value(notifier, "ferry_notifier_clients", channel="all") == 1
    assert value(notifier, "ferry_notifier_push_latency_seconds_count") > 0  # lag of the live frames
    assert run.watcher is not None
    assert any(f.get("kind") == "event" for f in run.watcher.frames), run.watcher.error

    # bounded labels: no release id, host name or address in any label value
    forbidden = [*run.releases, "web1", *(h.address for h in run.hosts)]
    for samples in (gw, builder, agent, notifier):
        for _name, labels in samples:
            assert not any(f in v for f in forbidden for _k, v in labels), labels


def spans(traces: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(traces.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            span["service"] = span["resource"]["attributes"]["service.name"]
            found.append(span)
    return found


@pytest.mark.sshd
def test_a_release_is_one_trace_across_services(run: Run) -> None:
    first, second = run.releases
    deadline = time.monotonic() + 10
    while True:  # the last spans are written as their handlers end, just after the release does
        found = spans(run.traces)
        mine = [s for s in found if first in str(s["attributes"].get("subject", ""))]
        ids = {s["context"]["trace_id"] for s in mine}
        if len(ids) == 1 and any(s["service"] == "ferry-gateway" for s in mine):
            break
        assert time.monotonic() < deadline, f"spans of {first} in {len(ids)} traces: {mine[:5]}"
        time.sleep(0.3)
    (trace_id,) = ids
    in_trace = [s for s in found if s["context"]["trace_id"] == trace_id]
    by_service = {s["service"] for s in in_trace}
    assert {"ferry-gateway", "ferry-builder", "ferry-agent"} <= by_service, by_service

    roots = [s for s in in_trace if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["POST /api/releases"], roots
    assert roots[0]["service"] == "ferry-gateway"
    names = {s["name"] for s in in_trace}
    assert {"builder", "agent-default", "orchestrator"} <= names, names
    assert {f"host step {step}" for step in STEPS} <= names, names
    known = {s["context"]["span_id"] for s in in_trace}
    assert all(s["parent_id"] in known for s in in_trace if s["parent_id"] is not None)

    others = {s["context"]["trace_id"] for s in found if second in str(s["attributes"].get("subject", ""))}
    assert others and trace_id not in others  # the next release is a trace of its own


async def test_the_trace_context_travels_in_event_and_work_headers(bus) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    stop, seen = asyncio.Event(), {}

    async def handler(msg: Any) -> None:
        seen["trace"] = trace.get_current_span().get_span_context().trace_id
        stop.set()

    try:
        event = requested("traced")
        with tracing.tracer().start_as_current_span("POST /api/releases") as root:
            (seq,) = await bus.events.append([event], expected_seq=0, whole_release=True)
            await bus.publish_work("build", "build:traced", {"release_id": "traced", "lock": 1})
        want, parent = root.get_span_context().trace_id, root.get_span_context().span_id
        stored = await bus.js.get_msg(EVENTS_STREAM, seq=seq, direct=True)
        assert (stored.headers or {})["traceparent"].startswith(f"00-{want:032x}-{parent:016x}-")
        assert [s.event for s in await bus.events.load("traced")] == [event]  # the body: untouched

        consumer = run_consumer(bus.js, WORK_STREAM, "trace-test", "ferry.work.build", handler, stop)
        await asyncio.wait_for(consumer, 20)
        assert seen["trace"] == want
        (consumed,) = [s for s in exporter.get_finished_spans() if s.name == "trace-test"]
        assert consumed.context.trace_id == want and consumed.parent is not None
        assert consumed.parent.span_id == parent
        assert consumed.attributes == {"subject": "ferry.work.build"}
    finally:
        tracing.use(None)
        provider.shutdown()


def test_without_an_exporter_a_carried_trace_is_passed_on_unchanged() -> None:
    assert not tracing.enabled()
    carried = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with tracing.consuming("builder", carried, subject="ferry.work.build"):
        headers: dict[str, str] = {}
        tracing.inject(headers)
    assert headers == carried
    with tracing.consuming("builder", {}, subject="ferry.work.build"):
        untraced: dict[str, str] = {}
        tracing.inject(untraced)
    assert untraced == {}
