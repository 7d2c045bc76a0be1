"""The notifier's fan-out metrics, kept by hand on the hot path (a few counters and one histogram).

A flush writes one event to a thousand live clients: counting that as ``pushed += written`` and
one weighted histogram observation costs nothing, where the client library would take a lock per
frame. The names and help texts are ``ferry.infra.metrics.NOTIFIER_FAMILIES``; ``exposition``
adds every shared family (webhook deliveries, event-store latency, the process).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

from ferry.infra import metrics as families

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.pushed = 0
        self.direct = 0  # of ``pushed``: written by the follower itself to live clients
        self.resyncs = 0
        self.connections = 0
        self.refused = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_latency(self, seconds: float, frames: int = 1) -> None:
        """``frames`` client frames sent ``seconds`` after their event's time."""
        seconds = max(seconds, 0.0)
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += frames
        self.latency_sum += seconds * frames
        self.latency_count += frames

    def render(self, clients: Mapping[str, int], head: int) -> str:
        values: dict[str, list[str]] = {
            "ferry_notifier_clients": [
                f'ferry_notifier_clients{{channel="{k}"}} {v}' for k, v in sorted(clients.items())
            ],
            "ferry_notifier_connections_total": [f"ferry_notifier_connections_total {self.connections}"],
            "ferry_notifier_refused_total": [f"ferry_notifier_refused_total {self.refused}"],
            "ferry_notifier_events_pushed_total": [f"ferry_notifier_events_pushed_total {self.pushed}"],
            "ferry_notifier_events_direct_total": [f"ferry_notifier_events_direct_total {self.direct}"],
            "ferry_notifier_resyncs_total": [f"ferry_notifier_resyncs_total {self.resyncs}"],
            "ferry_notifier_stream_head": [f"ferry_notifier_stream_head {head}"],
            "ferry_notifier_push_latency_seconds": self._latency(),
        }
        lines = []
        for name, (kind, help_text) in families.NOTIFIER_FAMILIES.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *values[name]]
        return "\n".join(lines) + "\n"

    def _latency(self) -> list[str]:
        name = "ferry_notifier_push_latency_seconds"
        lines, cumulative = [], 0
        for bound, count in zip(LATENCY_BUCKETS, self.buckets, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.latency_count}')
        lines.append(f"{name}_sum {self.latency_sum:.6f}")
        lines.append(f"{name}_count {self.latency_count}")
        return lines

    def exposition(self, clients: Mapping[str, int], head: int) -> bytes:
        """The notifier's ``/metrics``: its fan-out families, then the shared registry."""
        return self.render(clients, head).encode() + families.exposition()
