from __future__ import annotations

from collections import Counter

import pytest

pytest_plugins = [
    "tests.harness.nats",
    "tests.harness.fixtures",
    "tests.harness.db",
    "tests.harness.gitrepo",
    "tests.harness.system",
]

# What real parts each passed test used, printed at the end so a run shows which tiers really ran.
_USES = {
    "nats-server": ("nats_server", "bus", "system"),
    "NATS cluster (3 nodes)": ("nats_cluster",),
    "sshd hosts": ("sshd_hosts", "sshd_host"),
    "whole system (processes)": ("system",),
}
_fixtures: dict[str, tuple[str, ...]] = {}
_passed: Counter[str] = Counter()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        _fixtures[item.nodeid] = tuple(getattr(item, "fixturenames", ()))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or not report.passed:
        return
    nodeid = report.nodeid
    tier = nodeid.split("/")[1] if nodeid.startswith("tests/") else "other"
    _passed[f"tier {tier}"] += 1
    names = _fixtures.get(nodeid, ())
    for label, fixtures in _USES.items():
        if any(f in names for f in fixtures):
            _passed[label] += 1
    if "[postgresql" in nodeid or "-postgresql" in nodeid:
        _passed["PostgreSQL"] += 1
    if "[sqlite" in nodeid or "-sqlite" in nodeid:
        _passed["SQLite"] += 1
    if "/e2e/test_portal" in nodeid:
        _passed["Chromium"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _passed:
        return
    terminalreporter.section("real parts exercised (passed tests)")
    for key in sorted(_passed):
        terminalreporter.write_line(f"{key:>28}: {_passed[key]}")
