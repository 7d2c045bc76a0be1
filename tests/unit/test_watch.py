"""The terminal display's view of a release: paused canaries say when (or how) they go on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ferry.cli.watch import ReleaseView, describe
from ferry.domain.events import ReleasePaused, ReleaseResumed

AT = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


def test_paused_with_a_timer_shows_when_it_resumes():
    view = ReleaseView("r1", status="deploying")
    resume_at = AT + timedelta(minutes=5)
    view.apply(7, ReleasePaused(release_id="r1", version=7, at=AT, hosts_done=("a",), resume_at=resume_at))
    assert view.status == "paused"
    assert view.status_text() == f"paused (resume at {resume_at.astimezone().strftime('%H:%M:%S')})"
    view.apply(8, ReleaseResumed(release_id="r1", version=8, at=resume_at, by="timer"))
    assert view.status_text() == "deploying"


def test_paused_without_a_timer_shows_the_resume_command():
    view = ReleaseView.from_api(
        {"id": "r1", "status": "paused", "last_seq": 3, "pause": {"resume_at": None}, "hosts": []}
    )
    assert view.status_text() == "paused (ferry release resume r1)"


def test_view_from_api_reads_the_resume_time():
    view = ReleaseView.from_api(
        {"id": "r1", "status": "paused", "last_seq": 3, "pause": {"resume_at": "2025-03-14T09:05:00Z"}}
    )
    assert view.resume_at == AT + timedelta(minutes=5)


def test_describe_names_the_resume_time():
    e = ReleasePaused(release_id="r1", version=7, at=AT, hosts_done=("a",), resume_at=AT)
    assert "resume_at=2025-03-14 09:00:00+00:00" in describe(7, e)
