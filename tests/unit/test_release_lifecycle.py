"""The release aggregate from request to a terminal state: the happy path, nothing before the request,
nothing after the end.
"""

from __future__ import annotations

import pytest

from ferry.domain.errors import Conflict, InvariantViolation
from ferry.domain.events import HOST_STEPS, HostStepStarted, ReleaseRequested, ReleaseSucceeded, host_of
from ferry.domain.release import (
    TERMINAL,
    Approve,
    Cancel,
    Command,
    Fail,
    FailBuild,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    Reject,
    RequestRelease,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    replay,
)
from tests.unit.release_builders import (
    COMMIT,
    HOSTS,
    RID,
    T0,
    Release,
    _cancelled,
    _failed,
    _failed_after_hosts,
    _succeeded,
    make_plan,
    release,
)

# --- the happy path ---------------------------------------------------------------


def test_happy_path():
    r = release().ready()
    for host in HOSTS:
        r.host_done(host)
    r(Succeed())

    s = r.state
    assert s.status == "succeeded" and s.terminal
    assert len(r.history) == 5 + 2 * 2 * len(HOST_STEPS) + 1
    # release-level events and each host's events are numbered on their own subjects
    assert (
        [e.version for e in r.history if host_of(e) is None]
        == list(range(1, s.version + 1))
        == [1, 2, 3, 4, 5, 6]
    )
    for host in HOSTS:
        mine = [e.version for e in r.history if host_of(e) == host]
        assert mine == list(range(1, 2 * len(HOST_STEPS) + 1)) and s.hosts[host].version == len(mine)
    assert all(e.release_id == RID for e in r.history)
    assert (s.project, s.environment, s.ref, s.requested_by) == ("shop", "prod", "v1.4.2", "alice")
    assert s.commit == COMMIT
    assert s.artifact is not None and s.artifact.digest == "sha256:" + "ab" * 32
    assert s.requested_at == T0
    assert s.finished_at == r.history[-1].at
    for host in HOSTS:
        h = s.hosts[host]
        assert h.status == "succeeded" and h.activated and h.previous_release == "rel-0"
        assert h.next_step() is None
        assert [h.steps[step].status for step in HOST_STEPS] == ["succeeded"] * len(HOST_STEPS)
    host_steps = [(e.host, e.step) for e in r.history if isinstance(e, HostStepStarted)]
    assert host_steps == [(h, step) for h in HOSTS for step in HOST_STEPS]
    assert isinstance(r.history[0], ReleaseRequested)
    assert isinstance(r.history[-1], ReleaseSucceeded)


def test_status_through_the_build():
    r = release().requested()
    assert r.state.status == "queued"
    assert set(r.state.hosts) == set(HOSTS)
    assert all(h.status == "waiting" for h in r.state.hosts.values())
    r(StartBuild())
    assert r.state.status == "building" and r.state.build_started
    r(RecordSource(COMMIT))
    assert r.state.status == "building" and r.state.commit == COMMIT
    r(RecordHook(0, "make", 0, 1.0))
    r(RecordArtifact("sha256:00", 10, "gz", reused=True))
    assert r.state.status == "deploying"
    assert r.state.artifact is not None and r.state.artifact.reused


def test_hosts_interleave_freely():
    r = release().ready()
    r(StartHostStep("web-1", "upload"), StartHostStep("web-2", "upload"))
    r(FinishHostStep("web-2", "upload", 0, 1.0), FinishHostStep("web-1", "upload", 0, 1.0))
    assert r.state.hosts["web-1"].next_step() == "link"
    assert r.state.hosts["web-2"].next_step() == "link"


def test_replay_equals_the_state_built_step_by_step():
    r = release().ready()
    r.host_done("web-1").up_to("web-2", "health")
    assert replay(RID, r.history) == r.state


def test_commands_produce_one_event_with_the_next_version():
    r = release().ready()
    events = decide(r.state, StartHostStep("web-1", "upload"), T0)
    assert len(events) == 1
    assert events[0].version == r.state.hosts["web-1"].version + 1 == 1
    assert decide(r.state, Cancel("bob"), T0)[0].version == r.state.version + 1
    assert events[0].at == T0 and events[0].release_id == RID


# --- before the release exists ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [Approve("bob"), StartBuild(), RecordSource(COMMIT), Cancel("bob"), Succeed(), Fail("x")],
    ids=lambda c: type(c).__name__,
)
def test_nothing_before_the_request(command: Command):
    release().refuses(command, "does not exist")


def test_request_twice_refused():
    release().requested().refuses(RequestRelease("shop", "prod", "main", "bob", make_plan()), "already")


def test_request_without_hosts_refused():
    err = release().refuses(RequestRelease("shop", "prod", "main", "bob", make_plan(hosts=())))
    assert err.field == "hosts"


def test_invariant_violation_is_a_conflict():
    assert issubclass(InvariantViolation, Conflict)
    assert InvariantViolation.code == "INVARIANT"


# --- terminal states ----------------------------------------------------------------


def _rejected() -> Release:
    return release().requested(require_approval=True)(Reject("bob", "freeze"))


TERMINAL_ROUTES = {
    "succeeded": _succeeded,
    "failed": _failed,
    "failed-after-hosts": _failed_after_hosts,
    "cancelled": _cancelled,
    "rejected": _rejected,
}

AFTER_TERMINAL: list[Command] = [
    RequestRelease("shop", "prod", "main", "bob", make_plan()),
    Approve("bob"),
    Reject("bob"),
    Cancel("bob"),
    StartBuild(),
    RecordSource(COMMIT),
    RecordHook(1, "make", 0, 1.0),
    RecordArtifact("sha256:01", 1, "zst"),
    FailBuild("package", "disk full"),
    StartHostStep("web-1", "upload"),
    StartHostStep("web-2", "upload"),
    FinishHostStep("web-1", "upload", 0, 1.0),
    FinishHostStep("web-2", "upload", 0, 1.0),
    FailHost("web-2", "upload", "boom"),
    RollBackHost("web-1", None),
    Succeed(),
    Fail("again"),
]


@pytest.mark.parametrize("route", TERMINAL_ROUTES)
@pytest.mark.parametrize("command", AFTER_TERMINAL, ids=lambda c: type(c).__name__)
def test_nothing_after_a_terminal_state(route: str, command: Command):
    r = TERMINAL_ROUTES[route]()
    assert r.state.terminal and r.state.status in TERMINAL
    r.refuses(command)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(
            name,
        )
        if name == "failed"
        else name
        for name in TERMINAL_ROUTES
    ],
)
def test_terminal_event_flag_matches_the_state(route: str):
    r = TERMINAL_ROUTES[route]()
    assert r.history[-1].TERMINAL
    assert not any(e.TERMINAL for e in r.history[:-1])


def test_terminal_states_record_reason_and_time():
    assert _failed().state.reason == "build fetch failed: ref not found"
    assert _failed_after_hosts().state.reason == "web-1 failed"
    assert _cancelled().state.reason == "wrong ref"
    assert _rejected().state.reason == "freeze"
    for route in TERMINAL_ROUTES.values():
        r = route()
        assert r.state.finished_at == r.history[-1].at
