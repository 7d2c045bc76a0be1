"""The release aggregate's evolve(): how each event folds into the state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.domain.events import HOST_STEPS, ArtifactPackaged, HostStepFinished, ReleaseFailed
from ferry.domain.release import (
    Cancel,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordSource,
    StartBuild,
    StartHostStep,
    decide,
    evolve,
    guards_whole_release,
)
from tests.unit.release_builders import COMMIT, RID, T0, _failed_after_hosts, release

# --- evolve -----------------------------------------------------------------------------------


def test_evolve_keeps_previous_release_from_activate_detail():
    r = release().ready().up_to("web-1", "activate")
    r.steps("web-1", ["activate"], previous="rel-0042")
    assert r.state.hosts["web-1"].previous_release == "rel-0042"
    r.steps("web-1", HOST_STEPS[HOST_STEPS.index("activate") + 1 :])
    assert r.state.hosts["web-1"].previous_release == "rel-0042"


@pytest.mark.parametrize("detail", [{}, {"previous": None}, {"previous": 42}, {"other": "rel-9"}])
def test_evolve_previous_release_is_none_without_a_string(detail: dict[str, object]):
    r = release().ready().up_to("web-1", "activate")
    r(StartHostStep("web-1", "activate"), FinishHostStep("web-1", "activate", 0, 0.1, "", detail))
    h = r.state.hosts["web-1"]
    assert h.activated and h.previous_release is None


def test_previous_release_ignored_on_other_steps():
    r = release().ready()
    r(StartHostStep("web-1", "upload"), FinishHostStep("web-1", "upload", 0, 1.0, "", {"previous": "x"}))
    assert r.state.hosts["web-1"].previous_release is None


def test_evolve_sets_version_from_the_event():
    r = release().ready()
    assert r.state.version == r.history[-1].version == len(r.history)
    r(StartHostStep("web-1", "upload"))
    assert r.state.hosts["web-1"].version == r.history[-1].version == 1
    assert r.state.version == len(r.history) - 1  # a host's event leaves the release's number alone


def test_whole_release_guard_covers_release_events_first_steps_and_switches():
    r = release().ready()
    (first,) = decide(r.state, StartHostStep("web-1", "upload"), T0)
    assert guards_whole_release(first)
    r(StartHostStep("web-1", "upload"))
    (finish,) = decide(r.state, FinishHostStep("web-1", "upload", 0, 1.0), T0)
    assert not guards_whole_release(finish)
    r = release().ready().up_to("web-1", "activate")
    (switch,) = decide(r.state, StartHostStep("web-1", "activate"), T0)
    assert guards_whole_release(switch)
    assert guards_whole_release(decide(r.state, Cancel("bob"), T0)[0])
    (failed,) = decide(r.state, FailHost("web-1", "activate", "boom"), T0)
    assert not guards_whole_release(failed)


def test_cancel_while_a_host_is_switching_waits_for_it_and_rolls_it_back():
    r = release().ready().up_to("web-1", "activate")
    r(StartHostStep("web-1", "activate"))
    r(Cancel("bob"))
    assert r.state.status == "cancelling"
    r.refuses(Cancel("bob"), "being stopped")


def test_evolve_finish_without_a_start_uses_its_own_time():
    r = release().ready()
    finish = HostStepFinished(
        release_id=RID, version=r.state.hosts["web-1"].version + 1, at=T0 + timedelta(hours=1),
        host="web-1", step="upload", exit_code=0, duration=1.0,
    )  # fmt: skip
    state = evolve(r.state, finish)
    assert state.hosts["web-1"].steps["upload"].started_at == finish.at


def test_state_is_not_mutated_by_evolve():
    r = release().ready()
    before = r.state
    snapshot = (dict(before.hosts), before.hosts["web-1"].steps.copy())
    decide_events = decide(before, StartHostStep("web-1", "upload"), T0)
    evolve(before, decide_events[0])
    assert (dict(before.hosts), before.hosts["web-1"].steps) == snapshot


def test_artifact_event_fields_land_in_state():
    r = release().requested()(StartBuild(), RecordSource(COMMIT))
    r(RecordArtifact("sha256:ff", 77, "none", reused=True, log_digest="sha256:ee", duration=2.0))
    e = r.history[-1]
    assert isinstance(e, ArtifactPackaged) and e.log_digest == "sha256:ee" and e.duration == 2.0
    art = r.state.artifact
    assert art is not None and (art.digest, art.size, art.format, art.reused) == (
        "sha256:ff",
        77,
        "none",
        True,
    )


def test_release_failed_event_sets_reason():
    r = _failed_after_hosts()
    assert isinstance(r.history[-1], ReleaseFailed)
