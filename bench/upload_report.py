"""bench_upload.py's output: the table of every method and payload, and ferry's notes."""

from __future__ import annotations

from bench.common import Timings
from bench.upload_methods import SCP, SCP_GCM, FerryRun, Payload


# --- output --------------------------------------------------------------------
def print_table(
    payloads: list[Payload], timings: Timings, hosts: int, wire: dict[tuple[str, str], int]
) -> None:
    header = (
        f"{'method':<26} {'payload':<12} {'best s':>7} {'runs s':>12} {'MB/s':>7} "
        f"{'wire MB':>8} {'x ferry':>8} {'x ferry+pkg':>11}"
    )
    print(header)
    print("-" * len(header))
    methods = sorted({m for m, _ in timings.runs}, key=_method_order)
    for payload in payloads:
        ferry = timings.best("ferry", payload.name)
        for method in methods:
            best = timings.best(method, payload.name)
            if best is None:
                continue
            ratio = f"{best / ferry:.2f}" if ferry and not method.startswith("ferry") else ""
            ratio_pkg = f"{best / (ferry + payload.pack_seconds):.2f}" if ratio else ""
            mbps = payload.size * hosts / 1e6 / best
            print(
                f"{method:<26} {payload.name:<12} {best:>7.2f} {timings.spread(method, payload.name):>12} "
                f"{mbps:>7.1f} {wire.get((method, payload.name), 0) / 1e6:>8.1f} {ratio:>8} {ratio_pkg:>11}"
            )
        print(
            f"{'  ferry package (once)':<26} {payload.name:<12} {payload.pack_seconds:>7.2f} {'':>12} "
            f"{payload.size / 1e6 / payload.pack_seconds:>7.1f} {'':>8}"
        )
    print()
    print(
        "MB/s: tree MB x hosts / s.  wire MB: bytes sent to one host.  x ferry: method s / ferry s "
        "(above 1: ferry faster).  x ferry+pkg: against ferry's upload plus its packaging."
    )


_ORDER = ["ferry", "ferry (cached)", SCP, SCP_GCM, "rsync -a", "ansible"]


def _method_order(method: str) -> int:
    return _ORDER.index(method) if method in _ORDER else len(_ORDER)


def print_ferry_notes(payloads: list[Payload], ferry_runs: dict[str, list[FerryRun]]) -> None:
    for payload in payloads:
        runs = ferry_runs.get(payload.name)
        if not runs:
            continue
        print(f"ferry session cipher: {runs[0].cipher}")
        break
    print(
        "ferry (cached): a second release of the same digest transfers 0 bytes "
        "(the host keeps the archive under .ferry/artifacts/); only tar -x remains."
    )
