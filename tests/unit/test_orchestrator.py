"""The orchestrator's reactions route host work to each host's agent group (no server: a fake bus)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from ferry.domain.events import Event
from ferry.domain.release import replay
from ferry.domain.work import Work
from ferry.infra import orchestrator
from ferry.infra.bus import Bus
from ferry.infra.commands import Loaded
from ferry.infra.envlock import EnvLock, joined
from tests.unit.rollout_builders import Release


@dataclass
class FakeHistories:
    history: list[Event]

    async def get(self, release_id: str) -> Loaded:
        return Loaded(replay(release_id, self.history), len(self.history), {}, len(self.history))


@dataclass
class FakeLocks:
    """The environment lock's pure transitions, kept in memory."""

    locks: dict[tuple[str, str], EnvLock] = field(default_factory=dict)

    async def join(self, project: str, environment: str, release_id: str) -> EnvLock:
        lock = self.locks.get((project, environment), EnvLock(project, environment))
        self.locks[(project, environment)] = joined(lock, release_id, datetime.now(UTC))
        return self.locks[(project, environment)]


@dataclass
class FakeBus:
    histories: FakeHistories
    locks: FakeLocks = field(default_factory=FakeLocks)
    published: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    async def queue(self, subject: str, work: Work) -> None:
        self.published.append((subject, work.msg_id, json.loads(work.canonical())))


def _bus(release: Release) -> Any:
    return cast(Bus, FakeBus(FakeHistories(release.history)))


async def test_host_work_goes_to_the_hosts_group_with_unchanged_ids() -> None:
    release = Release(hosts=("web1", "web2"), concurrency=2).built()
    bus = _bus(release)
    asked: list[str] = []

    def group_of(host: str) -> str:
        asked.append(host)
        return {"web2": "eu"}.get(host, "default")

    await orchestrator.react(bus, "rel-1", group_of=group_of)
    assert sorted(bus.published) == [
        (
            "ferry.work.host.default.deploy",
            "deploy:rel-1:web1",
            {"release_id": "rel-1", "host": "web1", "lock": 1},
        ),
        (
            "ferry.work.host.eu.deploy",
            "deploy:rel-1:web2",
            {"release_id": "rel-1", "host": "web2", "lock": 1},
        ),
    ]
    assert sorted(asked) == ["web1", "web2"]


async def test_without_a_look_up_every_host_is_in_the_default_group() -> None:
    bus = _bus(Release(hosts=("web1",)).built())
    await orchestrator.react(bus, "rel-1")
    assert [subject for subject, _, _ in bus.published] == ["ferry.work.host.default.deploy"]


async def test_quiet_release_warns_about_host_work_nobody_took(caplog: pytest.LogCaptureFixture) -> None:
    release = Release(hosts=("web1",)).built()
    with caplog.at_level(logging.WARNING, logger="ferry.infra.orchestrator"):
        await orchestrator._warn_waiting(
            replay("rel-1", release.history), timedelta(minutes=5), lambda h: "eu"
        )
    [record] = caplog.records
    assert (record.host, record.agent_group, record.waited) == ("web1", "eu", 300)  # type: ignore[attr-defined]


async def test_a_release_behind_another_in_its_environment_schedules_nothing() -> None:
    bus = _bus(Release(hosts=("web1",)).built())
    state = (await bus.histories.get("rel-1")).state
    env = (state.project, state.environment)
    bus.locks.locks[env] = EnvLock(*env, holder="other", token=7)
    await orchestrator.react(bus, "rel-1")
    assert bus.published == [], "no build, no host work while another release holds the environment"
    assert bus.locks.locks[env].waiting == ["rel-1"]


async def test_a_new_release_asks_for_its_build_as_typed_work() -> None:
    bus = _bus(Release(hosts=("web1",)))
    await orchestrator.react(bus, "rel-1")
    assert bus.published == [("ferry.work.build", "build:rel-1", {"lock": 1, "release_id": "rel-1"})]
