"""Agent groups: slugs, the work subjects that route host work, and the agents' filters."""

from __future__ import annotations

import pytest

from ferry.domain.agentgroups import validate_group
from ferry.domain.errors import InvalidInput
from ferry.infra.settings import Settings
from ferry.infra.subjects import action_of, agent_consumer, doctor, group_work, host_work
from services.agent.bootstrap import work_filters
from services.agent.rollback import rollback
from services.agent.worker import HANDLERS, deploy


@pytest.mark.parametrize("group", ["default", "eu", "dc-2", "a_b", "0", "x" * 50])
def test_valid_groups(group: str) -> None:
    assert validate_group(group) == group


@pytest.mark.parametrize(
    "group", ["", "EU", "-eu", "_eu", "eu.west", "eu west", "eu>", "*", "x" * 51, None, 3]
)
def test_invalid_groups_name_the_field(group: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_group(group)
    assert info.value.field == "agent_group"


def test_work_subjects_carry_the_group() -> None:
    assert host_work("default", "deploy") == "ferry.work.host.default.deploy"
    assert host_work("eu", "rollback") == "ferry.work.host.eu.rollback"
    assert group_work("eu") == "ferry.work.host.eu.>"
    assert agent_consumer("eu") == "agent-eu"
    assert doctor("eu") == "ferry.doctor.eu"
    with pytest.raises(ValueError):
        host_work("eu", "reboot")
    with pytest.raises(InvalidInput):
        host_work("e.u", "deploy")  # a dot would move the work into another group's subjects


def test_agents_dispatch_on_the_last_token() -> None:
    assert HANDLERS[action_of("ferry.work.host.eu.deploy")] is deploy
    assert HANDLERS[action_of("ferry.work.host.default.rollback")] is rollback
    assert HANDLERS[action_of("ferry.work.host.deploy")] is deploy  # queued before agent groups


def test_group_filters_never_overlap() -> None:
    # A work-queue stream refuses consumers with overlapping filters.
    assert work_filters("eu") == ["ferry.work.host.eu.>"]
    assert work_filters("default") == [
        "ferry.work.host.default.>",
        "ferry.work.host.deploy",
        "ferry.work.host.rollback",
    ]
    # a group named like an action still gets subjects of its own (">" needs one more token)
    assert work_filters("deploy") == ["ferry.work.host.deploy.>"]


def test_agent_group_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_AGENT_GROUP", raising=False)
    assert Settings.from_env().agent_group == "default"
    monkeypatch.setenv("FERRY_AGENT_GROUP", "eu")
    assert Settings.from_env().agent_group == "eu"
    monkeypatch.setenv("FERRY_AGENT_GROUP", "EU!")
    with pytest.raises(SystemExit, match="FERRY_AGENT_GROUP"):
        Settings.from_env()
