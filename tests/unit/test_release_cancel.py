"""The release aggregate's cancel: at once when nothing runs, else hosts stop and switches are undone
first.
"""

from __future__ import annotations

import pytest

from ferry.domain.events import ReleaseCancelled, ReleaseCancelRequested
from ferry.domain.release import Cancel, FailHost, FinishHostStep, RollBackHost, StartBuild, StartHostStep
from tests.unit.release_builders import release

# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["queued", "building", "deploying", "rolled-back"])
def test_cancel_ends_at_once_when_nothing_runs_and_nothing_switched(before: str):
    r = release().requested()
    if before == "building":
        r(StartBuild())
    elif before != "queued":
        r.built()
    if before == "rolled-back":
        r.up_to("web-1", "restart")(FailHost("web-1", "restart", "x"), RollBackHost("web-1", "rel-0"))
    r(Cancel("alice", "wrong ref"))
    assert r.state.status == "cancelled"
    assert isinstance(r.history[-1], ReleaseCancelled)


@pytest.mark.parametrize("at", ["upload-running", "pre-activate", "switching", "activated", "host-succeeded"])
def test_cancel_at_any_moment_stops_hosts_and_undoes_switches_first(at: str):
    r = release().ready()
    if at == "upload-running":
        r(StartHostStep("web-1", "upload"))
    if at == "pre-activate":
        r.up_to("web-1", "activate")  # every step before the switch finished; the switch not started
    if at == "switching":
        r.up_to("web-1", "activate")(StartHostStep("web-1", "activate"))
    if at == "activated":
        r.up_to("web-1", "restart")
    if at == "host-succeeded":
        r.host_done("web-1")
    r(Cancel("alice", "wrong ref"))
    assert isinstance(r.history[-1], ReleaseCancelRequested) and r.state.status == "cancelling"
    r.refuses(StartHostStep("web-2", "upload"), "cancelling")
    if r.state.hosts["web-1"].status == "running":
        step = r.state.hosts["web-1"].next_step()
        if r.state.hosts["web-1"].steps.get(step or "") is not None:  # the step in flight finishes
            r(FinishHostStep("web-1", step or "", 0, 1.0))
        r.refuses(StartHostStep("web-1", r.state.hosts["web-1"].next_step() or ""), "cancelling")
        r(FailHost("web-1", "x", "cancelled by alice", "CANCELLED"))
    r.refuses(Cancel("bob"), "being stopped or rolled back") if r.state.hosts["web-1"].activated else None
    if r.state.hosts["web-1"].activated:
        r(RollBackHost("web-1", "rel-0"))
    r(Cancel("bob"))
    e = r.history[-1]
    assert isinstance(e, ReleaseCancelled) and e.by == "alice" and e.reason == "wrong ref"
