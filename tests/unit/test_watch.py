"""The terminal display's view of a release: the state ``evolve`` folds, shown through the view the
API shows too; paused canaries say when (or how) they go on; unknown events end the watch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ferry.cli.watch import ReleaseView, WatchError, describe
from ferry.domain.events import Plan, Recipe, ReleasePaused, ReleaseRequested, ReleaseResumed
from ferry.domain.release import UnknownEventType

AT = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("a", "b"), strategy="canary")


def requested(rid: str = "r1") -> dict[str, object]:
    e = ReleaseRequested(
        release_id=rid,
        version=1,
        at=AT,
        project="shop",
        environment="prod",
        ref="main",
        requested_by="al",
        plan=PLAN,
    )
    return {"seq": 1, "event": e.model_dump(mode="json")}


def test_paused_with_a_timer_shows_when_it_resumes():
    view = ReleaseView.from_events("r1", [requested()])
    resume_at = AT + timedelta(minutes=5)
    view.apply(7, ReleasePaused(release_id="r1", version=7, at=AT, hosts_done=("a",), resume_at=resume_at))
    assert view.status == "paused"
    assert view.status_text() == f"paused (resume at {resume_at.astimezone().strftime('%H:%M:%S')})"
    view.apply(8, ReleaseResumed(release_id="r1", version=8, at=resume_at, by="timer"))
    assert view.status_text() == "deploying"
    view.apply(8, ReleasePaused(release_id="r1", version=8, at=AT, hosts_done=()))  # a repeat: ignored
    assert view.status == "deploying" and view.last_seq == 8


def test_paused_without_a_timer_shows_the_resume_command():
    view = ReleaseView.from_events("r1", [requested()])
    view.apply(3, ReleasePaused(release_id="r1", version=2, at=AT, hosts_done=("a",)))
    assert view.status_text() == "paused (ferry release resume r1)"
    assert view.view.pause is not None and view.view.pause.hosts_done == ("a",)


def test_an_event_this_ferry_does_not_know_ends_the_watch():
    unknown = {"seq": 2, "event": {**requested()["event"], "type": "release.teleported"}}  # type: ignore[dict-item]
    with pytest.raises(WatchError, match="upgrade the ferry CLI"):
        ReleaseView.from_events("r1", [requested(), unknown])


def test_an_event_evolve_does_not_handle_is_refused():
    from tests.contract.fake_event import fake_event

    view = ReleaseView.from_events("r1", [requested()])
    with pytest.raises(UnknownEventType):
        view.apply(2, fake_event("r1", 2))


def test_describe_names_the_resume_time():
    e = ReleasePaused(release_id="r1", version=7, at=AT, hosts_done=("a",), resume_at=AT)
    assert "resume_at=2025-03-14 09:00:00+00:00" in describe(7, e)
