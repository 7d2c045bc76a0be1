"""OpenTelemetry traces: one release is one trace, carried in NATS headers (W3C ``traceparent``).

The gateway starts a span for ``POST /api/releases`` (``TracingMiddleware``); the event store puts
the current context on every append (``inject``: headers beside the event, never in its signed
body), ``Bus.publish_work`` on every work item, and every consumer loop
(``ferry.infra.worker.run_consumer``) continues the context it finds on the message
(``consuming``): the orchestrator's reaction to ``release.requested`` publishes the build with
it, the builder's events carry it on to the deploy work, and each agent's host steps are spans of
the same trace.

Exporters, by the standard variables, decided once per process by ``setup``:

- nothing set: no SDK at all; the contexts found on messages are passed on unchanged (so a
  traced gateway's trace survives an untraced builder), and nothing else runs;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``): OTLP, when the package
  ``opentelemetry-exporter-otlp-proto-http`` (or ``-grpc``) is installed; ferry does not
  depend on it, and says so in the log when the variable is set without it;
- ``FERRY_TRACES_DIR``: every finished span as one JSON line in ``<dir>/<service>-<pid>.jsonl``
  (the SDK's console exporter writing to a file), for a look without a collector, and what the
  tests read;
- ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``: off, whatever else is set.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger("ferry.infra.tracing")

TRACEPARENT = "traceparent"
TRACER = "ferry"
_state: dict[str, Any] = {"enabled": False, "provider": None}
OTLP_EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def enabled() -> bool:
    """Whether this process records spans (``setup`` found an exporter)."""
    return bool(_state["enabled"])


def setup(service: str, *, traces_dir: Path | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider for ``service`` when an exporter is configured; True if one is."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
        return False
    from opentelemetry.sdk.resources import Resource  # noqa: I001 - the SDK only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    processors: list[Any] = []
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        exporter = _otlp_exporter()
        if exporter is None:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but no OTLP exporter is installed "
                "(pip install opentelemetry-exporter-otlp-proto-http); spans are not exported"
            )
        else:
            processors.append(BatchSpanProcessor(exporter))
    if traces_dir is not None:
        traces_dir.mkdir(parents=True, exist_ok=True)
        out = open(traces_dir / f"{service}-{os.getpid()}.jsonl", "a", buffering=1)  # for the process
        lines = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        processors.append(SimpleSpanProcessor(lines))
    if not processors:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": f"ferry-{service}"}))
    for p in processors:
        provider.add_span_processor(p)
    trace.set_tracer_provider(provider)
    _state.update(enabled=True, provider=provider)
    log.info("tracing on", extra={"service": service})
    return True


def _otlp_exporter() -> Any:
    for module in OTLP_EXPORTERS:
        try:
            return importlib.import_module(module).OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        except ImportError:
            continue
    return None


def use(provider: Any) -> None:
    """Record spans with ``provider`` in this process (None: stop). ``setup`` installs the global
    one; tests give an SDK provider with an in-memory exporter and take it away afterwards."""
    _state.update(enabled=provider is not None, provider=provider)


def shutdown() -> None:
    """Flush and stop the exporters (at the end of the process)."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()


def tracer() -> trace.Tracer:
    provider = _state["provider"]
    return trace.get_tracer(TRACER) if provider is None else provider.get_tracer(TRACER)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context (``traceparent``) to outgoing NATS headers, if there is one."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


@contextlib.contextmanager
def consuming(name: str, headers: Mapping[str, str] | None, **attributes: Any) -> Iterator[None]:
    """Run a message's handler in the trace its headers carry: as a span when tracing is on, else
    by passing the context on untouched. A message without a ``traceparent`` starts nothing when off."""
    carried = headers is not None and TRACEPARENT in headers
    if not enabled():
        if not carried:
            yield
            return
        token = context.attach(propagate.extract(headers))
        try:
            yield
        finally:
            context.detach(token)
        return
    parent = propagate.extract(headers) if carried else None
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


async def of_release(events: Any, release_id: str) -> Mapping[str, str]:
    """The headers of a release's request (its first event), which carry the release's trace.

    One direct get. A reaction started on another release's behalf (the environment lock handed
    on at a release's end) continues this trace, not the one that ended.
    """
    from ferry.infra.eventstore import release_subject  # the event store imports this module

    try:
        msg = await events.js.get_msg(
            events.stream, seq=1, subject=release_subject(release_id), direct=True, next=True
        )
    except Exception:  # noqa: BLE001 - no trace found is no trace continued
        return {}
    return dict(msg.headers or {})


@contextlib.contextmanager
def continuing(headers: Mapping[str, str]) -> Iterator[None]:
    """Run the block in the trace ``headers`` carry, or in none (never in the caller's)."""
    carried = propagate.extract(headers) if TRACEPARENT in headers else context.Context()
    token = context.attach(carried)
    try:
        yield
    finally:
        context.detach(token)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of the current one (a no-op span when tracing is off)."""
    if not enabled():
        yield trace.INVALID_SPAN
        return
    with tracer().start_as_current_span(name, attributes=attributes) as s:
        yield s


def finished(name: str, seconds: float, *, error: bool = False, **attributes: Any) -> None:
    """Record a span that has just ended after ``seconds`` (work timed elsewhere, e.g. in a thread)."""
    if not enabled():
        return
    end = time.time_ns()
    s = tracer().start_span(name, start_time=end - int(max(seconds, 0.0) * 1e9), attributes=attributes)
    if error:
        s.set_status(Status(StatusCode.ERROR))
    s.end(end_time=end)


class TracingMiddleware:
    """Pure ASGI middleware: a server span per HTTP request, named ``METHOD /route/{template}``.

    It continues a ``traceparent`` the client sent. Off (no exporter), it only passes requests on.
    """

    SKIP = ("/healthz", "/metrics", "/static/", "/favicon.ico")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not enabled() or scope["path"].startswith(self.SKIP):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        method = scope.get("method", "GET")
        status: dict[str, int] = {}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        with tracer().start_as_current_span(
            f"{method} {scope['path']}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as s:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    s.update_name(f"{method} {scope.get('root_path', '')}{template}")
                    s.set_attribute("http.route", template)
                if "code" in status:
                    s.set_attribute("http.response.status_code", status["code"])
                    if status["code"] >= 500:
                        s.set_status(Status(StatusCode.ERROR))
