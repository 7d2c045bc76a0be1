"""The release aggregate's approval: approve, reject, and cancel while awaiting approval."""

from __future__ import annotations

from ferry.domain.events import BuildStarted, ReleaseApproved, ReleaseRejected
from ferry.domain.release import Approve, Cancel, Reject, StartBuild
from tests.unit.release_builders import release

# --- approval -------------------------------------------------------------------------------


def test_approval_flow():
    r = release().requested(require_approval=True)
    assert r.state.status == "awaiting_approval"
    r.refuses(StartBuild(), "awaiting_approval")
    r(Approve("bob"))
    assert r.state.status == "queued"
    assert isinstance(r.history[-1], ReleaseApproved) and r.history[-1].by == "bob"
    r.refuses(Approve("carol"), "not awaiting approval")
    r.refuses(Reject("carol"), "not awaiting approval")
    r(StartBuild())
    assert isinstance(r.history[-1], BuildStarted)


def test_reject_is_terminal():
    r = release().requested(require_approval=True)(Reject("bob", "freeze"))
    assert r.state.status == "rejected" and r.state.terminal
    assert isinstance(r.history[-1], ReleaseRejected)
    r.refuses(Approve("bob"))


def test_reject_without_reason_gets_a_default():
    assert release().requested(require_approval=True)(Reject("bob")).state.reason == "rejected"


def test_approve_and_reject_need_a_pending_approval():
    r = release().requested()
    r.refuses(Approve("bob"), "not awaiting approval")
    r.refuses(Reject("bob"), "not awaiting approval")


def test_cancel_while_awaiting_approval():
    r = release().requested(require_approval=True)(Cancel("alice"))
    assert r.state.status == "cancelled" and r.state.reason == "cancelled"
