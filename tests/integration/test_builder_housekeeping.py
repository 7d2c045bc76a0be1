"""The builder's disk (``services/builder/housekeeping.py``) on real git mirrors: mirrors not
fetched for long whose project is gone are removed, a project's mirror stays however old, a
mirror another builder holds is left for later; build directories a killed builder left go."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from services.builder.housekeeping import sweep
from services.builder.mirror import MirrorCache
from services.builder.package import sweep_workdirs
from tests.harness.gitrepo import GitRepoFactory

DAY = 86400.0


def test_stale_mirrors_of_removed_projects_go_and_the_others_stay(tmp_path: Path, git_repos: GitRepoFactory):
    cache = MirrorCache(tmp_path / "mirrors")
    live, gone, busy = (git_repos.create(name) for name in ("live", "gone", "busy"))
    paths = {r.url: cache.sync(r.url) for r in (live, gone, busy)}
    later = time.time() + 31 * DAY

    assert cache.collect([live.url], older_than=30 * DAY) == [], "fetched just now: nothing is stale"
    fd = os.open(cache.root / f"{paths[busy.url].name.removesuffix('.git')}.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another builder is fetching it
    try:
        removed = cache.collect([live.url], older_than=30 * DAY, now=later)
    finally:
        os.close(fd)
    assert removed == [paths[gone.url]]
    assert not paths[gone.url].exists()
    assert (paths[live.url] / "HEAD").is_file(), "a project's mirror stays, however old"
    assert (paths[busy.url] / "HEAD").is_file(), "a mirror in use is left for the next sweep"
    assert cache.collect([live.url], older_than=30 * DAY, now=later) == [paths[busy.url]]
    cache.sync(gone.url)  # a project that comes back clones again
    assert cache.resolve(gone.url, "main") == gone.head


def test_left_over_build_directories_go_after_their_age(tmp_path: Path, git_repos: GitRepoFactory):
    work = tmp_path / "work"
    old, fresh = work / "build-rel_a-x1", work / "build-rel_b-x2"
    for d in (old, fresh):
        (d / "src").mkdir(parents=True)
        (d / "src" / "file").write_text("data")
    os.utime(old, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    (work / "unrelated").mkdir()
    assert sweep_workdirs(work, older_than=DAY) == [old]
    assert not old.exists() and fresh.exists() and (work / "unrelated").exists()

    cache = MirrorCache(tmp_path / "mirrors")
    repo = git_repos.create("app")
    cache.sync(repo.url)
    assert sweep(cache, work, [repo.url], work_age=0, mirror_age=0) == ([fresh], [])
