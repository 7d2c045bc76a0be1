"""The release aggregate's build stage: source, hooks, artifact, and a failed build."""

from __future__ import annotations

from ferry.domain.release import FailBuild, RecordArtifact, RecordHook, RecordSource, StartBuild
from tests.unit.release_builders import COMMIT, release

# --- build ----------------------------------------------------------------------------------


def test_build_twice_refused():
    r = release().requested()(StartBuild())
    r.refuses(StartBuild(), "building")


def test_source_twice_refused():
    r = release().requested()(StartBuild(), RecordSource(COMMIT))
    r.refuses(RecordSource(COMMIT), "already fetched")


def test_hook_and_artifact_need_fetched_source():
    r = release().requested()(StartBuild())
    r.refuses(RecordHook(0, "make", 0, 1.0), "no fetched source")
    r.refuses(RecordArtifact("sha256:00", 1, "zst"), "no fetched source")


def test_artifact_twice_refused():
    r = release().ready()
    r.refuses(RecordArtifact("sha256:01", 1, "zst"))


def test_build_failure_is_terminal_with_its_stage():
    r = release().requested()(StartBuild(), RecordSource(COMMIT), FailBuild("hooks", "npm ci exited 1"))
    assert r.state.status == "failed"
    assert r.state.reason == "build hooks failed: npm ci exited 1"


def test_build_failure_needs_a_build():
    release().requested().refuses(FailBuild("fetch", "x"), "no build in progress")
