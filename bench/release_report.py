"""bench_release.py's tables: medians (min-max) of every method, ratios, bytes, and what went wrong."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.common import median

if TYPE_CHECKING:
    from bench.bench_release import Results
    from bench.release_system import FerryUp


def _cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    spread = f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""
    return f"{median(values):.2f} s{spread}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def _phases(res: Results, method: str, n: int) -> str:
    runs = res.phases.get((method, n))
    if not runs:
        return "—"
    return f"{median([b for b, _ in runs]):.2f} + {median([h for _, h in runs]):.2f} s"


def _hosts_phase(res: Results, method: str, n: int) -> float | None:
    runs = res.phases.get((method, n))
    return median([h for _, h in runs]) if runs else None


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def print_report(args: argparse.Namespace, res: Results, server_errors: list[str], ferry: FerryUp) -> None:
    app = res.app
    print()
    print(f"## whole release: {app.get('files', '?')} files, {_mb(app.get('size', 0))} "
          f"(artifact {_mb(app.get('artifact', 0))} .tar.zst), concurrency {args.concurrency}, "
          f"median (min–max) of {args.repeat}")  # fmt: skip
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}, {_ssh_version()}; "
          f"hosts' /srv on {'disk' if app.get('disk') else 'tmpfs'}")  # fmt: skip
    print()
    print("| hosts | ferry POST → succeeded | build + hosts (events) | scp -c aes128-gcm + extract + switch "
          "| Ansible unarchive | ferry ÷ scp | ferry hosts ÷ scp | ferry ÷ Ansible |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.counts:
        print(
            f"| {n} | {_cell(res.seconds.get(('ferry', n)))} | {_phases(res, 'ferry', n)} "
            f"| {_cell(res.seconds.get(('scp', n)))} | {_cell(res.seconds.get(('ansible', n)))} "
            f"| {_ratio(res.med('ferry', n), res.med('scp', n))} "
            f"| {_ratio(_hosts_phase(res, 'ferry', n), res.med('scp', n))} "
            f"| {_ratio(res.med('ferry', n), res.med('ansible', n))} |"
        )
    if not app.get("ansible"):
        print("(Ansible skipped: pass --with-ansible)")
    print()
    print("| hosts | one-file change: ferry | build + hosts (events) | sent per host (% of artifact) "
          "| rsync -a | rsync sent per host | ferry ÷ rsync | rollback (POST → succeeded) "
          "| build + hosts |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.counts:
        sent = res.change_bytes.get(n, [])
        if sent:
            per_host = median([float(s[0]) for s in sent])
            artifact = median([float(s[2]) for s in sent])
            share = (
                f"{per_host:,.0f} B ({100 * per_host / artifact:.1f} %)" if artifact else f"{per_host:,.0f} B"
            )
        else:
            share = "—"
        rsync = res.rsync_bytes.get(n, [])
        rsync_sent = f"{median([float(b) for b in rsync]):,.0f} B" if rsync else "—"
        print(
            f"| {n} | {_cell(res.seconds.get(('ferry change', n)))} "
            f"| {_phases(res, 'ferry change', n)} | {share} "
            f"| {_cell(res.seconds.get(('rsync change', n)))} | {rsync_sent} "
            f"| {_ratio(res.med('ferry change', n), res.med('rsync change', n))} "
            f"| {_cell(res.seconds.get(('rollback', n)))} | {_phases(res, 'rollback', n)} |"
        )
    if res.upload_detail:
        print(f"upload step detail of the last one-file change (first host): {_short(res.upload_detail)}")
    if not args.no_small:
        print()
        print(
            f"| one host, {args.small_mb} MB app, restart + HTTP health | ferry POST → succeeded "
            "| build + hosts (events) | script: scp + extract + switch + restart + health | ferry ÷ script |"
        )
        print("| --- | --- | --- | --- | --- |")
        print(
            f"| 1 | {_cell(res.seconds.get(('ferry small', 1)))} | {_phases(res, 'ferry small', 1)} "
            f"| {_cell(res.seconds.get(('script', 1)))} "
            f"| {_ratio(res.med('ferry small', 1), res.med('script', 1))} |"
        )
    print()
    for n in args.counts:
        steps = res.steps.get(n)
        if steps:
            print(
                f"N={n} last ferry run, median host step: "
                + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items())
            )
    for n in args.counts:
        gaps = res.timeline.get(n)
        if gaps:
            print(f"N={n} last ferry run, from its events: " + ", ".join(f"{k} {v:.2f}s" for k, v in gaps))
    print("NATS consumers (FERRY_EVENTS / whole account): "
          + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in res.consumers.items())
          + f", peak sampled during releases {res.peak[0]}/{res.peak[1]}")  # fmt: skip
    if res.per_stream:
        print(
            "consumers per stream at the end: "
            + ", ".join(f"{k} {v}" for k, v in sorted(res.per_stream.items()))
        )
    print(f"gateway responses >= 500 seen by the bench: {len(server_errors)}")
    for line in server_errors[:10]:
        print(f"  {line}")
    restarts = ferry.restarts()
    print(f"services restarted by ferry up: {len(restarts)}")
    for line in restarts[:10]:
        print(f"  {line}")
    crashes = ferry.log_lines('"level": "error"', "Traceback", "failed; restarting", "maximum consumers")
    print(f"error lines in FERRY_HOME/logs: {len(crashes)}")
    for line in crashes[:10]:
        print(f"  {line[:300]}")
    warnings = Counter(_msg(line) for line in ferry.log_lines('"level": "warning"'))
    print(f"warning lines in FERRY_HOME/logs: {sum(warnings.values())}")
    for msg, count in warnings.most_common(5):
        print(f"  {count} x {msg}")
    if res.failures:
        print(f"failures ({len(res.failures)}):")
        for line in res.failures[:20]:
            print(f"  {line[:500]}")


def _msg(line: str) -> str:
    """'<file>: <json line>' -> '<file>: <msg>' (the line itself when it is not JSON)."""
    name, _, raw = line.partition(": ")
    try:
        return f"{name}: {json.loads(raw).get('msg', raw)}"
    except ValueError:
        return line[:200]


def _short(detail: dict[str, Any]) -> str:
    return ", ".join(f"{k}={str(v)[:24]}" for k, v in detail.items())


def _ssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip()
