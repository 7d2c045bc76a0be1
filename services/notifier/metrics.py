"""The notifier's Prometheus metrics, kept by hand (a few counters and one histogram)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

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
        lines = [
            "# HELP ferry_notifier_clients WebSocket clients connected, by channel kind.",
            "# TYPE ferry_notifier_clients gauge",
            *(f'ferry_notifier_clients{{channel="{k}"}} {v}' for k, v in sorted(clients.items())),
            "# HELP ferry_notifier_connections_total WebSocket connections accepted.",
            "# TYPE ferry_notifier_connections_total counter",
            f"ferry_notifier_connections_total {self.connections}",
            "# HELP ferry_notifier_refused_total WebSocket connections refused by authorization.",
            "# TYPE ferry_notifier_refused_total counter",
            f"ferry_notifier_refused_total {self.refused}",
            "# HELP ferry_notifier_events_pushed_total Event frames written to client sockets.",
            "# TYPE ferry_notifier_events_pushed_total counter",
            f"ferry_notifier_events_pushed_total {self.pushed}",
            "# HELP ferry_notifier_events_direct_total Event frames written by the follower to live clients.",
            "# TYPE ferry_notifier_events_direct_total counter",
            f"ferry_notifier_events_direct_total {self.direct}",
            "# HELP ferry_notifier_resyncs_total Clients told to resync because they fell behind.",
            "# TYPE ferry_notifier_resyncs_total counter",
            f"ferry_notifier_resyncs_total {self.resyncs}",
            "# HELP ferry_notifier_stream_head Last stream sequence the follower has fanned out.",
            "# TYPE ferry_notifier_stream_head gauge",
            f"ferry_notifier_stream_head {head}",
            "# HELP ferry_notifier_push_latency_seconds Event time to live send, per client frame.",
            "# TYPE ferry_notifier_push_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, self.buckets, strict=False):
            cumulative += count
            lines.append(f'ferry_notifier_push_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'ferry_notifier_push_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}')
        lines.append(f"ferry_notifier_push_latency_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"ferry_notifier_push_latency_seconds_count {self.latency_count}")
        return "\n".join(lines) + "\n"
