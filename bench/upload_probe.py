"""bench_upload.py --transfer-probe: the archive to every host, no extraction, by SFTP, exec channel, scp."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import run_parallel, settle
from bench.upload_methods import GCM, Bench, Payload
from services.agent.ssh import HostSession


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
