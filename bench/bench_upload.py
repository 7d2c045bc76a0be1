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
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paramiko  # noqa: E402

from bench.common import (  # noqa: E402
    SshClientFiles,
    Timings,
    make_big_tree,
    make_small_tree,
    run_parallel,
    settle,
    sshd_hosts,
    tree_stats,
)
from ferry.local.localsshd import SshdHost  # noqa: E402
from services.agent import remote  # noqa: E402
from services.agent.ssh import HostSession, SSHTarget  # noqa: E402
from services.builder.package import Archive, make_archive  # noqa: E402

DEPLOY_PATH = "/srv/ferry-bench"
BENCH_DIR = "/srv/bench"  # where the baselines extract, on every host
GCM = "aes128-gcm@openssh.com"
SCP = "scp + extract"
SCP_GCM = "scp -c aes128-gcm + extract"
_TRANSFERRED = re.compile(r"transferred (\d+) bytes in ([0-9.]+)s")


@dataclass
class Payload:
    name: str
    tree: Path
    files: int
    size: int  # bytes of the tree
    archive: Archive
    pack_seconds: float


@dataclass
class FerryRun:
    """What one ferry run saw on its slowest host."""

    cipher: str | None = None
    transferred: list[int] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # slowest host's connect/prepare/transfer/extract


class Bench:
    def __init__(self, hosts: list[SshdHost], client: SshClientFiles, work: Path, timeout: float) -> None:
        self.hosts = hosts
        self.client = client
        self.work = work
        self.timeout = timeout
        self.targets = [
            SSHTarget(
                name=f"host{i}",
                address=h.address,
                port=h.port,
                private_key=h.client_key_pem,
                host_key=h.host_key_line,
            )
            for i, h in enumerate(hosts)
        ]
        self.pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="agent")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- host-side housekeeping (never timed) ------------------------------
    def local(self, i: int, remote_path: str) -> Path:
        """The real path of a path under /srv on host i."""
        return self.hosts[i].srv_path / Path(remote_path).relative_to("/srv")

    def clear(self, remote_path: str) -> None:
        for i in range(len(self.hosts)):
            shutil.rmtree(self.local(i, remote_path), ignore_errors=True)
        settle()

    def verify(self, remote_dir: str, payload: Payload) -> None:
        for i in range(len(self.hosts)):
            got = tree_stats(self.local(i, remote_dir), ignore=(remote.MARKER,))
            if got != (payload.files, payload.size):
                raise RuntimeError(
                    f"host{i}:{remote_dir} holds {got[0]} files / {got[1]} bytes, "
                    f"expected {payload.files} / {payload.size}"
                )

    # --- ferry ---------------------------------------------------------------
    def ferry(self, payload: Payload) -> tuple[float, FerryRun]:
        """One release to every host in parallel; the caller clears or keeps the host cache."""
        release_id = f"bench-{uuid.uuid4().hex[:12]}"
        archive = payload.archive

        def one(target: SSHTarget) -> tuple[str | None, int, dict[str, float]]:
            t0 = time.perf_counter()
            with HostSession.connect(target, timeout=10.0) as session:
                t1 = time.perf_counter()
                prepared = remote.prepare(session, DEPLOY_PATH)
                if not prepared.ok:
                    raise RuntimeError(f"{target.name}: prepare failed: {prepared.output}")
                t2 = time.perf_counter()
                step = remote.upload_artifact(
                    session,
                    DEPLOY_PATH,
                    release_id,
                    archive.digest,
                    archive.fmt,
                    lambda: open(archive.path, "rb"),  # noqa: SIM115 -- upload_artifact closes it
                    timeout=self.timeout,
                )
                t3 = time.perf_counter()
                if not step.ok:
                    raise RuntimeError(f"{target.name}: upload failed: {step.output}")
                match = _TRANSFERRED.search(step.output)
                transfer = float(match.group(2)) if match else 0.0  # probe + transfer, as the step reports
                phases = {
                    "connect": t1 - t0,
                    "prepare": t2 - t1,
                    "probe+transfer": transfer,
                    "extract": (t3 - t2) - transfer,
                }
                return session.cipher, int(step.detail.get("transferred", 0)), phases

        started = time.perf_counter()
        futures = [self.pool.submit(one, t) for t in self.targets]
        results = [f.result(timeout=self.timeout + 60) for f in futures]
        seconds = time.perf_counter() - started
        run = FerryRun(cipher=results[0][0], transferred=[r[1] for r in results])
        slowest = max(results, key=lambda r: sum(r[2].values()))
        run.phases = slowest[2]
        self.verify(f"{DEPLOY_PATH}/releases/{release_id}", payload)
        return seconds, run

    # --- scp + ssh tar -x ------------------------------------------------------
    def scp(self, payload: Payload, cipher: str | None) -> tuple[float, float]:
        """(scp seconds, extract seconds), each phase over all hosts in parallel."""
        tag = uuid.uuid4().hex[:8]
        remote_archive = f"/srv/bench-{tag}{Path(payload.archive.path).name[64:]}"
        dest = f"{BENCH_DIR}/scp-{tag}"
        flags = " ".join(remote.FORMATS[payload.archive.fmt][1])
        copies = [
            [
                "scp", "-q", *self.client.options(i, cipher=cipher), "-P", str(h.port),
                str(payload.archive.path), f"root@{h.address}:{remote_archive}",
            ]
            for i, h in enumerate(self.hosts)
        ]  # fmt: skip
        extract = f"mkdir -p {dest} && tar -x --no-same-owner {flags} -f {remote_archive} -C {dest}"
        extracts = [[*self.client.ssh(i, cipher=cipher), extract] for i in range(len(self.hosts))]
        t0 = time.perf_counter()
        run_parallel(copies, timeout=self.timeout)
        t1 = time.perf_counter()
        run_parallel(extracts, timeout=self.timeout)
        t2 = time.perf_counter()
        self.verify(dest, payload)
        for i in range(len(self.hosts)):
            self.local(i, remote_archive).unlink()
        self.clear(dest)
        return t1 - t0, t2 - t1

    # --- rsync -------------------------------------------------------------------
    def rsync(self, payload: Payload) -> float:
        dest = f"{BENCH_DIR}/rsync-{uuid.uuid4().hex[:8]}/"
        commands = []
        for i, h in enumerate(self.hosts):
            shell = shlex.join(self.client.ssh(i)[:-1])  # ssh <options> -p <port>, without the destination
            commands.append(["rsync", "-a", "-e", shell, f"{payload.tree}/", f"root@{h.address}:{dest}"])
        t0 = time.perf_counter()
        run_parallel(commands, timeout=self.timeout)
        seconds = time.perf_counter() - t0
        self.verify(dest, payload)
        self.clear(dest)
        return seconds

    # --- ansible -----------------------------------------------------------------
    def ansible(self, payload: Payload, playbook_bin: str) -> float:
        home = self.work / "ansible"
        if not home.exists():
            self._write_ansible_files(home)
        dest = f"{BENCH_DIR}/ansible-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, ANSIBLE_CONFIG=str(home / "ansible.cfg"))
        command = [
            playbook_bin, "-i", str(home / "inventory.ini"), str(home / "unarchive.yml"),
            "-e", f"dest={dest}", "-e", f"archive={payload.archive.path}",
        ]  # fmt: skip
        t0 = time.perf_counter()
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=self.timeout)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"ansible-playbook failed:\n{exc.stdout.decode()[-3000:]}") from exc
        seconds = time.perf_counter() - t0
        self.verify(dest, payload)
        self.clear(dest)
        return seconds

    def _write_ansible_files(self, home: Path) -> None:
        home.mkdir(parents=True)
        (home / "cp").mkdir()
        rows = ["[bench]"]
        for i, h in enumerate(self.hosts):
            common = (
                f"-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={self.client.known_hosts} -o GlobalKnownHostsFile=/dev/null"
            )
            rows.append(
                f"host{i} ansible_host={h.address} ansible_port={h.port} ansible_user=root "
                f"ansible_ssh_private_key_file={self.client.keys[i]} "
                f"ansible_ssh_common_args='{common}' ansible_python_interpreter=/usr/bin/python3"
            )
        (home / "inventory.ini").write_text("\n".join(rows) + "\n")
        (home / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {len(self.hosts)}\n"
            "host_key_checking = True\n"
            f"local_tmp = {home / 'tmp'}\n"
            "retry_files_enabled = False\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {home / 'cp'}\n"
        )
        (home / "unarchive.yml").write_text(
            "- hosts: bench\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - ansible.builtin.file: {path: '{{ dest }}', state: directory}\n"
            "    - ansible.builtin.unarchive: {src: '{{ archive }}', dest: '{{ dest }}'}\n"
        )


# --- transfer only: where ferry's upload time goes ----------------------------
def transfer_probe(bench: Bench, payload: Payload, rounds: int) -> None:
    """Send the archive to every host without extracting it, three ways from one agent process.

    Shows what the SFTP framing costs: paramiko splits each 32 KiB SFTP write into two SSH packets
    (its channel packets stop at the peer's 32 KiB max packet minus 64), and every write waits for
    a status reply; an exec channel running `cat >` sends one packet per 32 KiB and reads no replies.
    """
    sessions = [HostSession.connect(t, timeout=10.0) for t in bench.targets]
    path = payload.archive.path

    def sftp(i: int) -> None:
        with open(path, "rb") as f:
            sessions[i].upload(f, f"/srv/probe-{i}")

    def sftp_one_packet(i: int) -> None:
        chunk = 32768 - 64 - 64  # the channel's packet limit, less the SFTP write header
        with open(path, "rb") as f, sessions[i].sftp().open(f"/srv/probe-{i}", "wb") as remote_file:
            remote_file.set_pipelined(True)
            while data := f.read(chunk):
                remote_file.write(data)

    def exec_cat(i: int) -> None:
        with open(path, "rb") as f:
            result, _ = sessions[i].stream_to_command(f, f"cat > /srv/probe-{i}", timeout=bench.timeout)
        if not result.ok:
            raise RuntimeError(result.output)

    def scp(cipher: str | None) -> Callable[[], None]:
        return lambda: run_parallel(
            [
                ["scp", "-q", *bench.client.options(i, cipher=cipher), "-P", str(h.port), str(path),
                 f"root@{h.address}:/srv/probe-{i}"]
                for i, h in enumerate(bench.hosts)
            ],
            timeout=bench.timeout,
        )  # fmt: skip

    def threaded(fn: Callable[[int], None]) -> Callable[[], None]:
        def run() -> None:
            futures = [bench.pool.submit(fn, i) for i in range(len(sessions))]
            for future in futures:
                future.result(timeout=bench.timeout)

        return run

    ways = [
        ("paramiko SFTP putfo (HostSession.upload)", threaded(sftp)),
        ("paramiko SFTP, one SSH packet per write", threaded(sftp_one_packet)),
        ("paramiko exec 'cat >' (stream_to_command)", threaded(exec_cat)),
        ("scp", scp(None)),
        ("scp -c aes128-gcm", scp(GCM)),
    ]
    print(
        f"transfer only, {payload.archive.size / 1e6:.1f} MB to each of {len(sessions)} hosts, no extraction:"
    )
    try:
        for _ in range(rounds):
            for label, action in ways:
                for i in range(len(sessions)):
                    bench.local(i, f"/srv/probe-{i}").unlink(missing_ok=True)
                settle()
                cpu0, t0 = time.process_time(), time.perf_counter()
                action()
                seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                mbps = payload.archive.size * len(sessions) / 1e6 / seconds
                print(f"  {label:<44} {seconds:6.2f}s {mbps:7.1f} MB/s  agent CPU {cpu / seconds:4.0%}")
    finally:
        for session in sessions:
            session.close()
        for i in range(len(sessions)):
            bench.local(i, f"/srv/probe-{i}").unlink(missing_ok=True)


# --- set-up ------------------------------------------------------------------
def find_ansible(install: bool) -> str | None:
    """ansible-playbook from this venv; installed with pip only when asked to."""
    found = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    if found or not install:
        return found
    print("installing ansible-core into this venv (--with-ansible) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "ansible-core"], check=True, timeout=600
    )
    return shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))


def package(name: str, tree: Path, files: int, size: int, out: Path) -> Payload:
    started = time.perf_counter()
    archive = make_archive(tree, out, excludes=[], fmt="zst")
    return Payload(name, tree, files, size, archive, time.perf_counter() - started)


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


def _ssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip()


if __name__ == "__main__":
    main()
