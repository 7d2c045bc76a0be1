"""bench/bench_upload.py's code paths on a ~1 MB payload and one host, so the benchmark cannot rot.

Not a unit test in the pure sense (it starts one real sshd), kept here beside the code it guards;
it asserts what the benchmark did, never how fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.bench_upload import Bench, package, print_ferry_notes, print_table, run_rounds
from bench.common import SshClientFiles, make_big_tree, make_small_tree, tree_stats
from tests.harness.sshd import SshdHost

pytestmark = pytest.mark.sshd


def test_every_method_delivers_both_payloads_once(
    sshd_hosts: Callable[..., list[SshdHost]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = sshd_hosts(1)
    big, small = tmp_path / "artifact", tmp_path / "small"
    big_size = make_big_tree(big, total_mb=1, seed=1, file_mb=1)
    small_size = make_small_tree(small, files=30, total_mb=1, seed=1)
    payloads = [
        package("artifact", big, tree_stats(big)[0], big_size, tmp_path / "out"),
        package("small", small, 30, small_size, tmp_path / "out"),
    ]
    bench = Bench(hosts, SshClientFiles(tmp_path / "ssh", hosts), tmp_path, timeout=120.0)
    try:
        timings, wire, ferry_runs = run_rounds(bench, payloads, {"ferry", "scp", "rsync"}, None, 1)
    finally:
        bench.close()

    methods = {"ferry", "ferry (cached)", "scp + extract", "scp -c aes128-gcm + extract", "rsync -a"}
    for payload in payloads:
        for method in methods:
            assert len(timings.runs[(method, payload.name)]) == 1
        assert wire[("ferry", payload.name)] == payload.archive.size
        assert wire[("ferry (cached)", payload.name)] == 0
        assert ferry_runs[payload.name][0].cipher == "aes128-gcm@openssh.com"
    print_table(payloads, timings, len(hosts), wire)
    print_ferry_notes(payloads, ferry_runs)
    out = capsys.readouterr().out
    assert "x ferry" in out and "ferry session cipher: aes128-gcm@openssh.com" in out
    # verify() checked every extracted tree; clear() left nothing behind on the host.
    assert not any((hosts[0].srv_path / "bench").iterdir())
    assert not (hosts[0].srv_path / "ferry-bench").exists()
