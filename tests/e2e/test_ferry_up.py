"""`ferry up` on embedded defaults: prints the portal line, answers 200, and SIGINT leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ferry.local.natsserver import free_port


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ferry_up_prints_portal_serves_and_stops_cleanly(tmp_path: Path):
    http_port, ws_port = free_port(), free_port()
    env = dict(
        os.environ,
        FERRY_HOME=str(tmp_path / "var"),
        FERRY_HTTP_PORT=str(http_port),
        FERRY_WS_PORT=str(ws_port),
    )
    env.pop("FERRY_NATS_URL", None)
    ferry = Path(sys.executable).parent / "ferry"
    proc = subprocess.Popen(
        [str(ferry), "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = time.monotonic()
    portal, lines = None, []
    try:
        assert proc.stdout is not None
        while time.monotonic() - started < 60:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("portal: "):
                portal = line.split(" ", 1)[1].strip()
                break
        assert portal == f"http://127.0.0.1:{http_port}/", "".join(lines[-20:])
        assert time.monotonic() - started < 60
        assert httpx.get(portal, timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ws_port}/healthz", timeout=10).status_code == 200
        family = _descendants(proc.pid)
        names = {
            Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in family if _alive(p)
        }
        assert any("nats-server" in n for n in names)
        assert sum("services." in n for n in names) == 4
        assert (tmp_path / "var" / "nats" / "jetstream").is_dir()
        assert (tmp_path / "var" / "ferry.db").exists()

        # a service that dies is started again by ferry up
        builder = next(p for p in family if _alive(p) and b"services.builder" in _cmdline(p))
        os.kill(builder, signal.SIGKILL)
        deadline = time.monotonic() + 30
        restarted = ""
        while time.monotonic() < deadline and "restarting" not in restarted:
            restarted = proc.stdout.readline()
        assert restarted.startswith("builder exited with code -9; restarting"), restarted
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            again = [p for p in _descendants(proc.pid) if _alive(p) and b"services.builder" in _cmdline(p)]
            if again:
                break
            time.sleep(0.1)
        assert again and again[0] != builder
        family |= _descendants(proc.pid)

        # so is its nats-server, on the same port and store; the services reconnect to it
        nats_pid = next(p for p in family if _alive(p) and b"nats-server" in _cmdline(p))
        os.kill(nats_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        restarted = ""
        while time.monotonic() < deadline and "restarting" not in restarted:
            restarted = proc.stdout.readline()
        assert restarted.startswith("nats-server exited with code -9; restarting it on nats://127.0.0.1:"), (
            restarted
        )
        assert not _alive(nats_pid), "the killed nats-server was not reaped"
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = httpx.get(f"{portal}healthz", timeout=2).json() == {"ok": True, "nats": True}
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert healthy, "the gateway did not reconnect to the restarted nats-server"
        family |= _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if _alive(p)], "processes left behind after SIGINT"


@pytest.mark.sshd
def test_ferry_up_demo_releases_with_the_printed_command(tmp_path: Path):
    from ferry.local.localsshd import harness_unavailable_reason

    reason = harness_unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    http_port, ws_port = free_port(), free_port()
    env = dict(
        os.environ,
        FERRY_HOME=str(tmp_path / "var"),
        FERRY_HTTP_PORT=str(http_port),
        FERRY_WS_PORT=str(ws_port),
    )
    env.pop("FERRY_NATS_URL", None)
    ferry = Path(sys.executable).parent / "ferry"
    proc = subprocess.Popen(
        [str(ferry), "up", "--demo"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        while time.monotonic() - started < 60:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("portal: "):
                break
        command = next(line for line in lines if "release it with: " in line).split("release it with: ")[1]
        args = command.split()
        assert args[:3] == ["ferry", "release", "create"]
        cli_env = dict(
            os.environ, FERRY_URL=f"http://127.0.0.1:{http_port}", FERRY_WS_URL=f"ws://127.0.0.1:{ws_port}"
        )
        done = subprocess.run(
            [str(ferry), *args[1:]], env=cli_env, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout + done.stderr
        assert time.monotonic() - started < 90  # a first release within the first minute or so
        assert httpx.get(f"http://127.0.0.1:{http_port}/projects/demo", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not leftover, f"processes left behind: {leftover}"
