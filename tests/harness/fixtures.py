"""pytest fixtures for real sshd hosts; loaded with `pytest_plugins = ["tests.harness.fixtures"]`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.sshd import SshdHost, harness_unavailable_reason


def _require_sshd() -> None:
    reason = harness_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but sshd hosts cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def sshd_hosts(tmp_path: Path) -> Iterator[Callable[..., list[SshdHost]]]:
    """`make(n, password=None) -> [SshdHost]`: n started hosts, all torn down after the test."""
    _require_sshd()
    started: list[SshdHost] = []

    def make(n: int = 1, *, password: str | None = None) -> list[SshdHost]:
        hosts = []
        for _ in range(n):
            host = SshdHost(tmp_path / f"host{len(started)}", password=password)
            started.append(host)
            hosts.append(host.start())
        return hosts

    yield make
    errors = []
    for host in reversed(started):
        try:
            host.stop()
        except Exception as exc:  # keep tearing the others down, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def sshd_host(sshd_hosts: Callable[..., list[SshdHost]]) -> SshdHost:
    """One started host."""
    return sshd_hosts(1)[0]
