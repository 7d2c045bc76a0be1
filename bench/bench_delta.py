"""A one-file change to a 64 MB application, to N real sshd hosts: ferry's delta upload against rsync -a.

    python bench/bench_delta.py                         # 4 hosts, 64 MB application, best of 3
    python bench/bench_delta.py --hosts 8 --size-mb 128 --repeat 5

The application is bench.common.make_app_tree (half random, half text-like; a few large files and
~60 source files per MB). Release 1 goes to every host in full (untimed, the base); release 2
changes one source file and is timed, all hosts in parallel, connection set-up included:

  ferry delta (cold agent)   HostSession.connect + remote.prepare + remote.upload_artifact with the
                             agent's manifest cache emptied first: the agent reads the new archive
                             once for its manifest, once more for the changed files
  ferry delta (warm agent)   the same with the new artifact's manifest already cached (the agent
                             reads manifests once per digest, e.g. right after downloading it)
  ferry full                 the same with use_delta=False: the whole archive, extracted
  rsync -a (in place)        rsync -a of the changed tree over a copy of release 1 on every host
  rsync -a --link-dest       rsync -a into a new directory, hard-linking unchanged files from the
                             copy of release 1 (what ferry's delta builds: a new release dir)

"sent" is bytes on the wire to one host as each tool reports them (ferry: the step's bytes_sent;
rsync: --stats "Total bytes sent"), and "% art." is that share of the .tar.zst. Nothing is asserted;
docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SshClientFiles, make_app_tree, median, settle, sshd_hosts, tree_stats  # noqa: E402
from ferry.local.localsshd import SshdHost  # noqa: E402
from services.agent import delta_upload, manifest, remote  # noqa: E402
from services.agent.ssh import HostSession, SSHTarget  # noqa: E402
from services.builder.package import Archive, make_archive  # noqa: E402

DEPLOY_PATH = "/srv/ferry-bench"
RSYNC_DIR = "/srv/rsync-bench"
_SENT = re.compile(r"Total bytes sent: ([\d,]+)")


def change_one_file(tree: Path) -> Path:
    """Rewrite one small source file (same size order, new bytes); returns its path."""
    victim = sorted((tree / "src").rglob("*.py"))[0]
    victim.write_bytes(victim.read_bytes()[::-1] + b"\n# changed\n")
    return victim


class Bench:
    def __init__(self, hosts: list[SshdHost], client: SshClientFiles, timeout: float) -> None:
        self.hosts, self.client, self.timeout = hosts, client, timeout
        self.targets = [
            SSHTarget(f"host{i}", h.address, h.port, private_key=h.client_key_pem, host_key=h.host_key_line)
            for i, h in enumerate(hosts)
        ]
        self.pool = ThreadPoolExecutor(max_workers=max(len(hosts), 1), thread_name_prefix="agent")

    def local(self, i: int, remote_path: str) -> Path:
        return self.hosts[i].srv_path / Path(remote_path).relative_to("/srv")

    def ferry(self, archive: Archive, release_id: str, **options: object) -> tuple[float, list[dict]]:
        def one(target: SSHTarget) -> dict:
            with HostSession.connect(target, timeout=10.0) as session:
                prepared = remote.prepare(session, DEPLOY_PATH)
                if not prepared.ok:
                    raise RuntimeError(prepared.output)
                step = remote.upload_artifact(
                    session, DEPLOY_PATH, release_id, archive.digest, archive.fmt,
                    lambda: open(archive.path, "rb"),  # noqa: SIM115 -- upload_artifact closes it
                    timeout=self.timeout, **options,  # type: ignore[arg-type]
                )  # fmt: skip
                if not step.ok:
                    raise RuntimeError(f"{target.name}: {step.output}")
                return step.detail

        t0 = time.perf_counter()
        details = [f.result() for f in [self.pool.submit(one, t) for t in self.targets]]
        return time.perf_counter() - t0, details

    def activate(self, release_id: str) -> None:
        for target in self.targets:
            with HostSession.connect(target) as session:
                assert remote.activate(session, DEPLOY_PATH, release_id).ok

    def rsync(self, tree: Path, dest: str, *extra: str) -> tuple[float, list[int]]:
        def one(i: int) -> int:
            shell = shlex.join(self.client.ssh(i)[:-1])
            command = [
                "rsync",
                "-a",
                "--stats",
                *extra,
                "-e",
                shell,
                f"{tree}/",
                f"root@{self.hosts[i].address}:{dest}/",
            ]
            import subprocess

            done = subprocess.run(command, capture_output=True, timeout=self.timeout, check=True)
            match = _SENT.search(done.stdout.decode())
            return int(match.group(1).replace(",", "")) if match else 0

        t0 = time.perf_counter()
        sent = [f.result() for f in [self.pool.submit(one, i) for i in range(len(self.hosts))]]
        return time.perf_counter() - t0, sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--disk", action="store_true", help="hosts' /srv on disk instead of a tmpfs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ferry-bench-delta-"))
    try:
        v1, v2 = work / "v1", work / "v2"
        make_app_tree(v1, total_mb=args.size_mb, seed=args.seed)
        shutil.copytree(v1, v2, symlinks=True)
        changed = change_one_file(v2)
        a1 = make_archive(v1, work / "out1", excludes=[], fmt="zst")
        a2 = make_archive(v2, work / "out2", excludes=[], fmt="zst")
        files, size = tree_stats(v2)
        print(
            f"application: {files} files, {size / 1e6:.1f} MB -> .tar.zst {a2.size / 1e6:.1f} MB; "
            f"changed {changed.relative_to(v2)} ({changed.stat().st_size} bytes)"
        )
        with sshd_hosts(args.hosts, work / "hosts", tmpfs=not args.disk) as hosts:
            client = SshClientFiles(work / "ssh", hosts)
            bench = Bench(hosts, client, args.timeout)
            where = "disk" if args.disk else "tmpfs"
            print(f"hosts: {args.hosts} x OpenSSH sshd on 127.0.0.N, /srv on {where}, cpus: {os.cpu_count()}")
            bench.ferry(a1, "base")  # release 1, in full
            bench.activate("base")
            for i in range(len(hosts)):
                bench.local(i, RSYNC_DIR).mkdir(parents=True, exist_ok=True)
            bench.rsync(v1, f"{RSYNC_DIR}/base")
            runs: dict[str, list[float]] = {}
            sent: dict[str, int] = {}

            for _ in range(args.repeat):
                for label, options, cold in [
                    ("ferry delta (cold agent)", {}, True),
                    ("ferry delta (warm agent)", {}, False),
                    ("ferry full", {"use_delta": False}, True),
                ]:
                    manifest.CACHE = manifest.ManifestCache() if cold else manifest.CACHE
                    if not cold:
                        manifest.CACHE.of_artifact(a2.digest, a2.fmt, lambda: open(a2.path, "rb"))  # noqa: SIM115
                    delta_upload._deltas.clear()  # no delta kept from an earlier round
                    settle()
                    rid = f"r-{uuid.uuid4().hex[:8]}"
                    seconds, details = bench.ferry(a2, rid, **options)
                    runs.setdefault(label, []).append(seconds)
                    sent[label] = max(int(d["bytes_sent"]) for d in details)
                    if options == {} and not all(d["delta"] for d in details):
                        raise RuntimeError(f"no delta: {details[0].get('delta_fallback')}")
                    for i in range(len(hosts)):  # the next round starts from the same base again
                        shutil.rmtree(bench.local(i, f"{DEPLOY_PATH}/releases/{rid}"))
                        bench.local(i, f"{DEPLOY_PATH}/.ferry/manifests/{rid}.gz").unlink(missing_ok=True)
                        for cached in bench.local(i, f"{DEPLOY_PATH}/.ferry/artifacts").glob(f"{a2.digest}*"):
                            cached.unlink()
                for label, extra in [("rsync -a (in place)", ()), ("rsync -a --link-dest", ("--link-dest",))]:
                    for i in range(len(hosts)):
                        shutil.rmtree(bench.local(i, f"{RSYNC_DIR}/work"), ignore_errors=True)
                        shutil.rmtree(bench.local(i, f"{RSYNC_DIR}/new"), ignore_errors=True)
                        if not extra:
                            shutil.copytree(
                                bench.local(i, f"{RSYNC_DIR}/base"),
                                bench.local(i, f"{RSYNC_DIR}/work"),
                                symlinks=True,
                                copy_function=shutil.copy2,
                            )
                    settle()
                    if extra:
                        seconds, per_host = bench.rsync(
                            v2, f"{RSYNC_DIR}/new", f"--link-dest={RSYNC_DIR}/base"
                        )
                    else:
                        seconds, per_host = bench.rsync(v2, f"{RSYNC_DIR}/work")
                    runs.setdefault(label, []).append(seconds)
                    sent[label] = max(per_host)

            print()
            header = (
                f"{'method':<28} {'best s':>7} {'median s':>9} {'sent/host':>11} {'% art.':>7} {'x rsync':>8}"
            )
            print(header)
            print("-" * len(header))
            rsync_best = min(runs["rsync -a (in place)"])
            for label, values in runs.items():
                print(
                    f"{label:<28} {min(values):>7.3f} {median(values):>9.3f} {sent[label]:>11,} "
                    f"{100 * sent[label] / a2.size:>6.2f}% {min(values) / rsync_best:>8.2f}"
                )
            print("\nx rsync: best seconds / best seconds of rsync -a (in place); below 1.5 meets the goal.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
