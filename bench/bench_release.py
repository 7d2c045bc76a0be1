"""The whole release path as a user runs it: `ferry up` + the REST API + N real sshd hosts.

    python bench/bench_release.py --hosts 1,20,50 --repeat 3 --with-ansible   # the docs' figures
    python bench/bench_release.py --hosts 1,3 --repeat 1                      # a quick look

Starts `ferry up` (its own FERRY_HOME in a temp dir, free ports) and max(--hosts) OpenSSH sshd
hosts (ferry/local/localsshd.py, /srv on a tmpfs unless --disk), registers them through the API, and
per N makes an environment of the first N hosts with concurrency --concurrency (10). The app is
a real git repository: --size-mb (64) of half random, half text-like files. Every round, per N:

  ferry          a fresh commit released to hosts whose deploy path was emptied (no artifact on
                 the hosts, no cached build): POST /api/releases -> GET .../{id} says succeeded
  ferry change   one small source file changed, committed and released again: seconds and the
                 bytes the upload steps report (`detail.transferred`), against `rsync -a` of the
                 same change to a copy of the tree on every host
  rollback       POST /api/releases/{first}/rollback -> succeeded
  scp            the same .tar.zst ferry packaged: `scp -c aes128-gcm` + ssh extract + switch a
                 `current` symlink, 10 hosts at once
  ansible        ansible-playbook unarchive + symlink, forks 10 (--with-ansible installs ansible-core)

And for one host and a --small-mb (5) app with the sample web app's restart and an HTTP health
check: ferry against a shell script doing scp + extract + switch + restart + wait for health.
Medians of --repeat runs; every gateway response >= 500 the bench saw is counted, and the NATS
consumers on FERRY_EVENTS (and in the account) are sampled before, during and after.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SshClientFiles, make_app_tree, median, sshd_hosts, tree_stats  # noqa: E402
from bench.release_baselines import Baselines, find_ansible  # noqa: E402
from bench.release_report import print_report  # noqa: E402
from bench.release_system import Api, FerryUp, NatsProbe  # noqa: E402
from ferry.local.demoapp import SampleRepo, health_url, make_sample_repo, restart_command  # noqa: E402
from ferry.local.localsshd import SshdHost  # noqa: E402
from ferry.local.natsserver import free_port  # noqa: E402

BIG, SMALL = "/srv/app", "/srv/small"
CHANGED = Path("src/pkg00/mod0/file0.py")  # the one file a one-file change touches


@dataclass
class Outcome:
    release_id: str
    seconds: float
    view: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.view.get("status") == "succeeded"

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def at(self, kind: str) -> datetime | None:
        found = self.of(kind)
        return datetime.fromisoformat(found[-1]["at"]) if found else None

    def steps(self, step: str) -> list[dict[str, Any]]:
        return [e for e in self.of("host.step_finished") if e["step"] == step]


@dataclass
class Results:
    seconds: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    change_bytes: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # (max, sum, artifact)
    rsync_bytes: dict[int, list[int]] = field(default_factory=dict)
    steps: dict[int, dict[str, float]] = field(default_factory=dict)  # last run's median step seconds
    phases: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)  # (build, hosts)
    upload_detail: dict[str, Any] = field(default_factory=dict)
    timeline: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    consumers: dict[str, tuple[int, int]] = field(default_factory=dict)
    peak: tuple[int, int] = (0, 0)
    per_stream: dict[str, int] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)

    def add(self, method: str, n: int, seconds: float) -> None:
        self.seconds.setdefault((method, n), []).append(seconds)

    def med(self, method: str, n: int) -> float | None:
        values = self.seconds.get((method, n))
        return median(values) if values else None


class Bench:
    def __init__(self, args: argparse.Namespace, api: Api, probe: NatsProbe, base: Baselines) -> None:
        self.args = args
        self.api = api
        self.probe = probe
        self.base = base
        self.results = Results()
        self._last_sample = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._last_sample < 0.5:
            return
        self._last_sample = now
        try:
            counts = self.probe.consumers()
        except Exception as exc:  # noqa: BLE001 -- a figure missing is not a reason to stop
            self.results.failures.append(f"consumer count: {exc!r}")
            return
        self.results.peak = (max(self.results.peak[0], counts[0]), max(self.results.peak[1], counts[1]))

    def release(self, label: str, post: Callable[[], str]) -> Outcome:
        started = time.perf_counter()
        release_id = post()
        view = self.api.wait(release_id, self.args.timeout, on_poll=self.sample)
        outcome = Outcome(release_id, time.perf_counter() - started, view, self.api.events(release_id))
        if not outcome.ok:
            failed = [e for e in outcome.events if e["type"] in ("host.failed", "build.failed")]
            reason = f"{label}: {release_id} {view.get('status')}: {view.get('reason')} {failed[:3]}"
            self.results.failures.append(reason[:1500])
            print(f"  FAILED {reason[:600]}", flush=True)
        return outcome

    def archive_of(self, outcome: Outcome, deploy: str, tree: Path) -> Path:
        """The archive ferry packaged, as host0 keeps it; packaged here with tar when it is not there."""
        packaged = outcome.of("build.artifact_packaged")
        cache = self.base.local(0, f"{deploy}/.ferry/artifacts")
        if packaged and cache.is_dir():
            for found in cache.iterdir():
                if found.name.startswith(packaged[-1]["digest"]):
                    copy = self.base.work / f"app{''.join(found.suffixes[-2:])}"
                    shutil.copyfile(found, copy)
                    return copy
        self.results.failures.append("ferry's archive not found on host0: packaged with tar --zstd instead")
        copy = self.base.work / "app.tar.zst"
        tar = ["tar", "-c", "--zstd", "--exclude=.git", "-f", str(copy), "-C", str(tree), "."]
        subprocess.run(tar, check=True, capture_output=True, timeout=self.args.timeout)
        return copy

    # --- one round at N hosts ----------------------------------------------------------
    def big_round(self, repo: SampleRepo, n: int, r: int, playbook: str | None) -> None:
        res, base, env = self.results, self.base, f"n{n}"
        base.clear(n, BIG)
        base.clear(n)
        version = f"n{n}-r{r}"
        sha = repo.commit(version)
        first = self.release(f"N={n} ferry", lambda: self.api.release("big", env, sha))
        say = [f"ferry {first.seconds:.2f}s"]
        if first.ok:
            res.add("ferry", n, first.seconds)
            self.record_phases("ferry", n, first)
            res.timeline[n] = timeline(first.events)
            names = dict.fromkeys(e["step"] for e in first.of("host.step_finished"))
            res.steps[n] = {s: median([e["duration"] for e in first.steps(s)]) for s in names}
        archive = self.archive_of(first, BIG, repo.path)
        base.rsync(repo.path, n, self.args.concurrency)  # the rsync copy of the first version (not timed)

        target = repo.path / CHANGED
        target.write_text(target.read_text() + f"\n# {version}\n")
        sha_b = repo.commit(version + "-changed")
        changed = self.release(f"N={n} change", lambda: self.api.release("big", env, sha_b))
        if changed.ok:
            res.add("ferry change", n, changed.seconds)
            self.record_phases("ferry change", n, changed)
            sent = [int(e.get("detail", {}).get("transferred", 0)) for e in changed.steps("upload")]
            packaged = changed.of("build.artifact_packaged")
            size = int(packaged[-1]["size"]) if packaged else 0
            res.change_bytes.setdefault(n, []).append((max(sent, default=0), sum(sent), size))
            if changed.steps("upload"):
                res.upload_detail = changed.steps("upload")[0].get("detail", {})
            say.append(f"change {changed.seconds:.2f}s ({max(sent, default=0)} B/host)")
        seconds, rsync_sent = base.rsync(repo.path, n, self.args.concurrency)
        res.add("rsync change", n, seconds)
        res.rsync_bytes.setdefault(n, []).append(rsync_sent)
        say.append(f"rsync {seconds:.2f}s ({rsync_sent} B/host)")

        if first.ok:
            back = self.release(f"N={n} rollback", lambda: self.api.rollback(first.release_id))
            if back.ok:
                res.add("rollback", n, back.seconds)
                self.record_phases("rollback", n, back)
                base.check_current(n, BIG, version)
            say.append(f"rollback {back.seconds:.2f}s")

        seconds = base.scp(archive, n, version, self.args.concurrency)
        res.add("scp", n, seconds)
        say.append(f"scp {seconds:.2f}s")
        if playbook:
            seconds = base.ansible(playbook, archive, n, version, self.args.concurrency)
            res.add("ansible", n, seconds)
            say.append(f"ansible {seconds:.2f}s")
        print(f"N={n:<3} round {r + 1}/{self.args.repeat}: " + ", ".join(say), flush=True)
        base.clear(n)
        archive.unlink()

    def small_round(self, repo: SampleRepo, r: int, script_port: int) -> None:
        for part in ("assets", "src"):
            shutil.rmtree(repo.path / part, ignore_errors=True)
        make_app_tree(repo.path, total_mb=self.args.small_mb, seed=self.args.seed + 1000 + r)
        version = f"small-r{r}"
        sha = repo.commit(version)
        outcome = self.release("N=1 small", lambda: self.api.release("small", "one", sha))
        say = [f"ferry {outcome.seconds:.2f}s"]
        if outcome.ok:
            self.results.add("ferry small", 1, outcome.seconds)
            self.record_phases("ferry small", 1, outcome)
        archive = self.archive_of(outcome, SMALL, repo.path)
        host = self.base.hosts[0]
        url = f"http://{host.address}:{script_port}/healthz"
        seconds = self.base.script(archive, version, restart_command(script_port), url)
        self.results.add("script", 1, seconds)
        say.append(f"script {seconds:.2f}s")
        print(f"N=1   small round {r + 1}/{self.args.repeat}: " + ", ".join(say), flush=True)
        archive.unlink()

    def record_phases(self, method: str, n: int, outcome: Outcome) -> None:
        requested, packaged = outcome.at("release.requested"), outcome.at("build.artifact_packaged")
        done = outcome.at("release.succeeded")
        if requested and packaged and done:
            phases = ((packaged - requested).total_seconds(), (done - packaged).total_seconds())
            self.results.phases.setdefault((method, n), []).append(phases)


def timeline(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Seconds between milestones of one release, from its events' `at`: where the time goes."""
    times = [(e["type"], e.get("step", ""), datetime.fromisoformat(e["at"])) for e in events]
    if not times:
        return []

    def first(kind: str, step: str = "") -> datetime | None:
        return next((t for k, s, t in times if k == kind and (not step or s == step)), None)

    def last(kind: str) -> datetime | None:
        return next((t for k, _, t in reversed(times) if k == kind), None)

    marks = [
        ("requested", times[0][2]),
        ("build started", first("build.started")),
        ("source fetched", first("build.source_fetched")),
        ("packaged", first("build.artifact_packaged")),
        ("first host step", first("host.step_started")),
        ("first upload done", first("host.step_finished", "upload")),
        ("last host step done", last("host.step_finished")),
        ("terminal", times[-1][2]),
    ]
    known = [(label, at) for label, at in marks if at is not None]
    return [(f"{a} → {b}", (tb - ta).total_seconds()) for (a, ta), (b, tb) in itertools.pairwise(known)]


def make_app(path: Path, total_mb: int, seed: int) -> SampleRepo:
    repo = make_sample_repo(path)
    make_app_tree(path, total_mb=total_mb, seed=seed)
    return repo


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", default="1,20,50", help="comma list of host counts (default 1,20,50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and N; medians are shown")
    parser.add_argument("--size-mb", type=int, default=64, help="MB of the application tree (default 64)")
    parser.add_argument("--small-mb", type=int, default=5, help="MB of the one-host app (default 5)")
    parser.add_argument("--concurrency", type=int, default=10, help="environment concurrency, scp/ansible -P")
    parser.add_argument("--agents", type=int, default=None, help="ferry up --agents (default: ferry's own)")
    parser.add_argument("--with-ansible", action="store_true", help="pip install ansible-core if missing")
    parser.add_argument("--no-ansible", action="store_true", help="skip Ansible even when installed")
    parser.add_argument("--no-small", action="store_true", help="skip the one-host 5 MB comparison")
    parser.add_argument("--disk", action="store_true", help="hosts' /srv on this disk instead of a tmpfs")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds any release or command may take"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.counts = sorted({int(x) for x in args.hosts.split(",") if x.strip()})
    if not args.counts or args.counts[0] < 1 or args.repeat < 1:
        parser.error("--hosts needs positive counts and --repeat at least 1")
    return args


def run(
    bench: Bench, args: argparse.Namespace, hosts: list[SshdHost], work: Path, playbook: str | None
) -> None:
    api, probe, res = bench.api, bench.probe, bench.results
    res.consumers["start"] = probe.consumers()
    names = api.add_hosts(hosts)
    big = make_app(work / "big", args.size_mb, args.seed)
    files, size = tree_stats(big.path, ignore=(".git",))
    res.app.update(files=files, size=size, hosts=len(hosts), ansible=bool(playbook), disk=args.disk)
    api.add_project("big", big.url, BIG)
    for n in args.counts:
        api.add_environment("big", f"n{n}", names[:n], args.concurrency)
    app_port, script_port = free_port(), free_port()
    small = make_app(work / "small", args.small_mb, args.seed)
    health = {"kind": "http", "target": health_url(app_port), "timeout": 2, "retries": 50, "interval": 0.1}
    api.add_project("small", small.url, SMALL, restart=restart_command(app_port), health=health)
    api.add_environment("small", "one", names[:1], 1)
    print(f"ferry up at {api.base_url}; {len(hosts)} sshd hosts; app {files} files, {size / 1e6:.1f} MB")
    warm_sha = big.commit("warm")
    warm = bench.release("warm-up", lambda: api.release("big", f"n{args.counts[0]}", warm_sha))
    print(f"warm-up release (not counted): {warm.seconds:.2f}s, {warm.view.get('status')}", flush=True)
    packaged = warm.of("build.artifact_packaged")
    res.app["artifact"] = int(packaged[-1]["size"]) if packaged else 0
    res.consumers["after warm-up"] = probe.consumers()
    for n in args.counts:
        for r in range(args.repeat):
            bench.big_round(big, n, r, playbook)
        res.consumers[f"after N={n}"] = probe.consumers()
    if not args.no_small:
        for r in range(args.repeat):
            bench.small_round(small, r, script_port)
    res.consumers["end"] = probe.consumers()
    res.per_stream = probe.per_stream()


def main() -> None:
    args = parse_args()
    playbook = None if args.no_ansible else find_ansible(args.with_ansible)
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-release-"))
    ferry = FerryUp(work / "home", agents=args.agents)
    api: Api | None = None
    probe: NatsProbe | None = None
    bench: Bench | None = None
    try:
        with sshd_hosts(max(args.counts), work / "hosts", tmpfs=not args.disk) as hosts:
            try:
                ferry.start()
                api, probe = Api(ferry.url), NatsProbe(ferry.nats_url, ferry.nats_admin())
                bench = Bench(
                    args,
                    api,
                    probe,
                    Baselines(hosts, SshClientFiles(work / "ssh", hosts), work, args.timeout),
                )
                run(bench, args, hosts, work, playbook)
            finally:  # ferry stops before its hosts do
                if probe is not None:
                    probe.close()
                if api is not None:
                    api.close()
                ferry.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping ferry up and every host", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if bench is not None:
            print_report(args, bench.results, api.server_errors if api else [], ferry)
        shutil.rmtree(work, ignore_errors=True)
    if bench is not None and bench.results.failures:
        raise SystemExit(1)  # the figures printed, but a release or a count failed: say so


if __name__ == "__main__":
    main()
