"""Fixtures of the MirrorCache tests: a cache in a temporary directory and a git repository to mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.builder.mirror import MirrorCache
from tests.harness.gitrepo import GitRepoFactory, Repo, git_repos  # noqa: F401  (`git_repos` is a fixture)


@pytest.fixture
def cache(tmp_path: Path) -> MirrorCache:
    return MirrorCache(tmp_path / "mirrors")


@pytest.fixture
def repo(git_repos: GitRepoFactory) -> Repo:  # noqa: F811
    return git_repos.create("app", {"README.md": "hello\n", "src/app.py": "print('v1')\n"})
