"""Deliver one artifact to N real sshd hosts in parallel and extract it: ferry against scp, rsync, Ansible.

    python bench/bench_upload.py                                  # 4 hosts, 200 MB artifact, 5,000 files
    python bench/bench_upload.py --hosts 8 --size-mb 500 --files 20000 --repeat 5
    python bench/bench_upload.py --with-ansible                   # pip-installs ansible-core into this venv

Two payloads: (a) one big artifact (~--size-mb of mixed random and text-like data, packaged as
.tar.zst by make_archive) and (b) a tree of --files small files (~--small-mb), packaged the same way.
Every method starts from nothing on the hosts and ends with the payload extracted into a fresh
directory on every host; the clock covers all N hosts in parallel, connection set-up included:

  ferry          the agent's own code path: per host, in a thread, HostSession.connect, remote.prepare,
                 remote.upload_artifact (SFTP upload into the host's artifact cache, then tar -x into
                 releases/<id>/), with a fresh release id and an empty host cache
  ferry (cached) the same right after, with another release id: the host already holds the digest,
                 so 0 bytes travel and only the extraction remains
  scp + extract  OpenSSH scp of the same archive to every host, then `ssh host tar -x`; with the
                 default cipher and with -c aes128-gcm@openssh.com
  rsync -a       of the tree (for the artifact, of the tree it was packaged from), over ssh
  ansible        ansible-playbook with unarchive (copy from the controller, extract), forks=N;
                 only when ansible-playbook is in this venv (--with-ansible installs ansible-core)

MB/s is the payload's tree bytes times the hosts over the seconds. x ferry = method seconds / ferry
seconds (above 1: ferry faster); x ferry+pkg adds ferry's packaging time, which rsync does not need.
The best of --repeat runs counts; methods take turns within each round. The hosts' /srv is a
tmpfs mounted for the run (--disk keeps it on this machine's disk; see docs/benchmarks.md for why).
Nothing is asserted; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paramiko  # noqa: E402

from bench.common import SshClientFiles, Timings, make_big_tree, make_small_tree, sshd_hosts, tree_stats  # noqa: E402
from bench.release_baselines import find_ansible  # noqa: E402
from bench.upload_methods import DEPLOY_PATH, GCM, SCP, SCP_GCM, Bench, FerryRun, Payload  # noqa: E402
from bench.upload_probe import transfer_probe  # noqa: E402
from bench.upload_report import print_ferry_notes, print_table  # noqa: E402
from services.builder.package import make_archive  # noqa: E402


# --- set-up ------------------------------------------------------------------
def package(name: str, tree: Path, files: int, size: int, out: Path) -> Payload:
    started = time.perf_counter()
    archive = make_archive(tree, out, excludes=[], fmt="zst")
    return Payload(name, tree, files, size, archive, time.perf_counter() - started)


# --- main ------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=4, help="sshd hosts, served in parallel (default 4)")
    parser.add_argument("--size-mb", type=int, default=200, help="MB of the artifact's tree (default 200)")
    parser.add_argument("--files", type=int, default=5000, help="files in the small-file tree (default 5000)")
    parser.add_argument("--small-mb", type=int, default=40, help="MB of the small-file tree (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best run of each method counts")
    parser.add_argument("--payloads", default="artifact,small", help="comma list of: artifact, small")
    parser.add_argument("--methods", default="ferry,scp,rsync,ansible", help="comma list to run")
    parser.add_argument("--with-ansible", action="store_true", help="pip install ansible-core if missing")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds any one step may take")
    parser.add_argument(
        "--disk",
        action="store_true",
        help="keep the hosts' /srv on this machine's disk instead of a tmpfs (see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--transfer-probe",
        action="store_true",
        help="only send the artifact (no extraction) by SFTP, exec channel and scp, showing agent CPU",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    methods = set(args.methods.split(","))

    playbook = find_ansible(args.with_ansible) if "ansible" in methods else None
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-upload-"))
    bench: Bench | None = None
    try:
        payloads: list[Payload] = []
        if "artifact" in args.payloads:
            tree = work / "artifact"
            size = make_big_tree(tree, total_mb=args.size_mb, seed=args.seed)
            files = tree_stats(tree)[0]
            payloads.append(package("artifact", tree, files, size, work / "out"))
        if "small" in args.payloads:
            tree = work / "small"
            size = make_small_tree(tree, files=args.files, total_mb=args.small_mb, seed=args.seed)
            payloads.append(package("small", tree, args.files, size, work / "out"))

        with sshd_hosts(args.hosts, work / "hosts", tmpfs=not args.disk) as hosts:
            client = SshClientFiles(work / "ssh", hosts)
            bench = Bench(hosts, client, work, args.timeout)
            where = "disk" if args.disk else "tmpfs"
            print(f"hosts: {args.hosts} x OpenSSH sshd on 127.0.0.N, /srv on {where}; best of {args.repeat}")
            print(
                f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}  paramiko: {paramiko.__version__}"
            )
            print(f"ssh: {_ssh_version()}")
            for p in payloads:
                print(
                    f"payload {p.name}: {p.files} files, {p.size / 1e6:.1f} MB -> {p.archive.path.name[64:]} "
                    f"{p.archive.size / 1e6:.1f} MB (packaged in {p.pack_seconds:.2f}s)"
                )
            if "ansible" in methods and playbook is None:
                print("ansible: skipped (pass --with-ansible)")
            print(flush=True)
            if args.transfer_probe:
                transfer_probe(bench, payloads[0], args.repeat)
                return
            timings, wire, ferry_runs = run_rounds(bench, payloads, methods, playbook, args.repeat)
            print()
            print_table(payloads, timings, len(hosts), wire)
            print_ferry_notes(payloads, ferry_runs)
    except KeyboardInterrupt:
        print("\ninterrupted; every host is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(work, ignore_errors=True)


def run_rounds(
    bench: Bench, payloads: list[Payload], methods: set[str], playbook: str | None, repeat: int
) -> tuple[Timings, dict[tuple[str, str], int], dict[str, list[FerryRun]]]:
    timings = Timings()
    wire: dict[tuple[str, str], int] = {}
    ferry_runs: dict[str, list[FerryRun]] = {}
    for round_ in range(repeat):
        for payload in payloads:
            steps: list[tuple[str, Callable[[], Any]]] = []
            if "ferry" in methods:
                steps.append(("ferry", lambda p=payload: _ferry_pair(bench, p, timings, wire, ferry_runs)))
            if "scp" in methods:
                for cipher in (None, GCM):
                    name = SCP_GCM if cipher else SCP
                    steps.append(
                        (name, lambda p=payload, c=cipher, n=name: _scp(bench, p, c, n, timings, wire))
                    )
            if "rsync" in methods:
                steps.append(("rsync -a", lambda p=payload: _record(timings, "rsync -a", p, bench.rsync(p))))
                wire[("rsync -a", payload.name)] = payload.size
            if "ansible" in methods and playbook:
                steps.append(
                    ("ansible", lambda p=payload: _record(timings, "ansible", p, bench.ansible(p, playbook)))
                )
                wire[("ansible", payload.name)] = payload.archive.size
            for name, step in steps:
                step()
                last = _last(timings, name, payload)
                print(f"round {round_ + 1}/{repeat} {payload.name:<9} {name:<26} {last}", flush=True)
    return timings, wire, ferry_runs


def _ferry_pair(
    bench: Bench,
    payload: Payload,
    timings: Timings,
    wire: dict[tuple[str, str], int],
    ferry_runs: dict[str, list[FerryRun]],
) -> None:
    bench.clear(DEPLOY_PATH)  # an empty host: no cache, no releases
    seconds, run = bench.ferry(payload)
    timings.add("ferry", payload.name, seconds)
    wire[("ferry", payload.name)] = max(run.transferred)
    ferry_runs.setdefault(payload.name, []).append(run)
    seconds, cached = bench.ferry(payload)  # same digest, new release id: the host cache answers
    timings.add("ferry (cached)", payload.name, seconds)
    wire[("ferry (cached)", payload.name)] = max(cached.transferred)
    print(
        f"round     {payload.name:<9} ferry phases (slowest host): "
        + ", ".join(f"{k} {v:.2f}s" for k, v in run.phases.items())
        + f"; cached run sent {max(cached.transferred)} bytes",
        flush=True,
    )
    bench.clear(DEPLOY_PATH)


def _scp(
    bench: Bench,
    payload: Payload,
    cipher: str | None,
    name: str,
    timings: Timings,
    wire: dict[tuple[str, str], int],
) -> None:
    copy, extract = bench.scp(payload, cipher)
    timings.add(name, payload.name, copy + extract)
    wire[(name, payload.name)] = payload.archive.size
    print(f"round     {payload.name:<9} {name}: scp {copy:.2f}s + extract {extract:.2f}s", flush=True)


def _record(timings: Timings, method: str, payload: Payload, seconds: float) -> None:
    timings.add(method, payload.name, seconds)


def _last(timings: Timings, method: str, payload: Payload) -> str:
    values = timings.runs.get((method, payload.name))
    return f"{values[-1]:.2f}s" if values else ""


def _ssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip()


if __name__ == "__main__":
    main()
