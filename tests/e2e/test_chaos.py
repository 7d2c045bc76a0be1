"""Issue 11 acceptance: nats-server and every service SIGKILLed at random moments during releases.

The whole system runs the way ``ferry up`` runs it (the launcher with its own nats-server,
restarting whatever dies), releasing to 10 real sshd hosts. Every release must end (succeeded,
or failed with a reason), no host may be activated twice in one release, and the time a kill
adds to a release (against an unkilled one) must stay under 15 s on average.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.sshd import SshdHost
from tests.harness.system import TERMINAL, System, start_system, supervised

pytestmark = [pytest.mark.sshd]

SEED = 11
HOSTS = 10
CHAOS_RELEASES = 3
VICTIMS = ("nats-server", "gateway", "builder", "agent-1", "agent-2", "notifier")
MEAN_DELAY_LIMIT = 15.0


@dataclass
class Run:
    release_id: str
    seconds: float
    status: str
    reason: str | None
    kills: list[tuple[float, str]] = field(default_factory=list)


def kill(system: System, victim: str) -> None:
    """SIGKILL one part, as a crash would; the launcher's supervisor notices and restarts it."""
    launcher = system.launcher
    if victim == "nats-server":
        assert launcher.nats is not None and launcher.nats.proc is not None
        proc = launcher.nats.proc
    else:
        proc = launcher.procs[victim]
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)


def read(system: System, path: str) -> dict[str, Any] | None:
    """GET ``path``; None while the gateway (or NATS behind it) is away."""
    try:
        r = system.api.get(path, timeout=5)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        assert r.status_code in (502, 503), f"GET {path}: {r.status_code} {r.text}"
        return None
    body: dict[str, Any] = r.json()
    return body


def wait_healthy(system: System, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read(system, "/healthz") is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"gateway not healthy after {timeout}s\n{system.logs()}")


def release(
    system: System,
    failed: list[BaseException],
    kills: list[float] | None = None,
    victims: list[str] | None = None,
) -> tuple[Run, list[float]]:
    """One release from POST to a terminal status, killing the next of ``victims`` at each offset.

    Returns the run and the offsets of kills that did not happen (the release ended first)."""
    wait_healthy(system)
    started = time.monotonic()
    rid = system.release("web", "prod", "main")
    pending = sorted(kills or [])
    run = Run(rid, 0.0, "", None)
    deadline = started + 240
    while time.monotonic() < deadline:
        assert not failed, f"the supervisor gave up: {failed[0]}"
        now = time.monotonic() - started
        if pending and now >= pending[0]:
            pending.pop(0)
            assert victims, "more kill moments than victims"
            victim = victims.pop(0)
            kill(system, victim)
            run.kills.append((round(now, 1), victim))
        body = read(system, f"/api/releases/{rid}")
        if body is not None and body["status"] in TERMINAL:
            run.seconds, run.status, run.reason = (
                time.monotonic() - started,
                body["status"],
                body.get("reason"),
            )
            return run, pending
        time.sleep(0.1)
    raise AssertionError(f"release {rid} did not end within 240 s (kills {run.kills})\n{system.logs()}")


def activations(system: System, release_id: str) -> Counter[str]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = read(system, f"/api/releases/{release_id}/events")
        if body is not None:
            events = [e["event"] for e in body["events"]]
            break
        time.sleep(0.2)
    return Counter(
        e["host"]
        for e in events
        if e["type"] == "host.step_finished" and e["step"] == "activate" and e["exit_code"] == 0
    )


def test_random_kills_during_releases_to_ten_hosts(
    tmp_path: Path, sshd_hosts: Callable[..., list[SshdHost]]
) -> None:
    rng = random.Random(SEED)
    hosts = sshd_hosts(HOSTS)
    system = start_system(tmp_path / "home", agents=2)  # its own nats-server, as `ferry up` runs it
    try:
        with supervised(system.launcher) as failed:
            sample = make_sample_repo(tmp_path / "sample")
            register(
                system,
                hosts,
                sample.url,
                app_port=free_port(),
                concurrency=HOSTS,
                keep=3,
                build_hooks=["sleep 1"],
            )
            # build and pre-release steps long enough that kills land while work is mid-step
            system.api.patch("/api/projects/web", json={"pre_release": "sleep 1"})
            sample.commit("warm-up")
            warm, _ = release(system, failed)  # fills the builder's mirror and the caches
            sample.commit("baseline")
            base, _ = release(system, failed)
            assert warm.status == base.status == "succeeded", (warm, base)

            # 7 kills: every part once and one more at random, in a random order; 2, 2, 3 per release
            victims = [*VICTIMS, rng.choice(VICTIMS)]
            rng.shuffle(victims)
            plan = [2, 2, 3]
            runs: list[Run] = []
            carried: list[float] = []
            for i in range(CHAOS_RELEASES):
                first = rng.uniform(0.3, 0.8) * base.seconds
                offsets = [first + k * rng.uniform(0.5, 1.0) * base.seconds for k in range(plan[i])]
                sample.commit(f"chaos-{i}")
                run, left = release(system, failed, sorted(carried + offsets), victims)
                carried = [rng.uniform(0.3, 0.8) * base.seconds for _ in left]
                runs.append(run)
            assert not failed, f"the supervisor gave up: {failed}"
            wait_healthy(system)

            kills = sum(len(r.kills) for r in runs)
            added = sum(r.seconds - base.seconds for r in runs)
            report = (
                f"baseline {base.seconds:.1f}s; "
                + "; ".join(f"{r.release_id} {r.status} in {r.seconds:.1f}s kills {r.kills}" for r in runs)
                + f"; {kills} kills, {added / max(kills, 1):.1f}s added per kill"
            )
            print(report)
            for r in [warm, base, *runs]:
                assert r.status in TERMINAL, report
                if r.status != "succeeded":
                    assert r.reason, f"{r.release_id} {r.status} without a reason: {report}"
                once = activations(system, r.release_id)
                assert all(n == 1 for n in once.values()), f"{r.release_id} activated twice: {once}"
                if r.status == "succeeded":
                    assert len(once) == HOSTS, f"{r.release_id}: {once}"
            assert kills >= 6, report
            assert {v for r in runs for _t, v in r.kills} >= {"nats-server", "gateway", "builder"}, report
            assert added / kills <= MEAN_DELAY_LIMIT, report
    finally:
        system.api.close()
        system.launcher.stop()
