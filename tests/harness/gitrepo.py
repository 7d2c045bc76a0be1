"""Real git repositories for tests, made with the git CLI and a fixed author.

def test_x(git_repos):
    repo = git_repos.create("app", {"README.md": "hi\n"})
    sha = repo.commit({"src/a.py": "x = 1\n"}, "add a")
    repo.tag("v1.0")
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Ferry Test",
    "GIT_AUTHOR_EMAIL": "test@ferry.invalid",
    "GIT_COMMITTER_NAME": "Ferry Test",
    "GIT_COMMITTER_EMAIL": "test@ferry.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}

Files = Mapping[str, "str | bytes | None"]


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    """Run git with the fixed author; return stdout stripped. Fails the test loudly on error."""
    full_env = {**os.environ, **AUTHOR_ENV, **(env or {})}
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout.strip()


class Repo:
    """A non-bare repository on disk; ``url`` is its file:// URL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = path.as_uri()

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.path)

    def write(self, files: Files) -> None:
        """Write (or, for a None value, delete) files in the work tree without committing."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)

    def commit(self, files: Files, message: str = "change") -> str:
        """Write ``files``, commit everything, return the new commit's sha."""
        self.write(files)
        self.git("add", "-A")
        self.git("commit", "--allow-empty", "-q", "-m", message)
        return self.head

    @property
    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    @property
    def current_branch(self) -> str:
        return self.git("symbolic-ref", "--short", "HEAD")

    def tag(self, name: str, *, message: str | None = None, target: str = "HEAD") -> str:
        """Tag ``target`` (annotated when ``message`` is given); return the tagged commit's sha."""
        if message is None:
            self.git("tag", name, target)
        else:
            self.git("tag", "-a", "-m", message, name, target)
        return self.git("rev-parse", f"{name}^{{commit}}")

    def branch(self, name: str, *, checkout: bool = False, start: str = "HEAD") -> str:
        """Create branch ``name`` at ``start`` (and check it out if asked); return its commit."""
        if checkout:
            self.git("checkout", "-q", "-b", name, start)
        else:
            self.git("branch", name, start)
        return self.git("rev-parse", name)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def delete_branch(self, name: str) -> None:
        self.git("branch", "-D", name)

    def tracked_files(self, rev: str = "HEAD") -> dict[str, bytes]:
        """Every file at ``rev`` with its bytes, read through git."""
        names = self.git("ls-tree", "-r", "--name-only", "-z", rev).split("\0")
        out: dict[str, bytes] = {}
        for name in filter(None, names):
            blob = subprocess.run(
                ["git", "cat-file", "blob", f"{rev}:{name}"],
                cwd=self.path,
                capture_output=True,
                check=True,
                env={**os.environ, **AUTHOR_ENV},
            )
            out[name] = blob.stdout
        return out


class GitRepoFactory:
    """Makes repositories under ``root``; each starts on branch ``main`` with one commit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def create(self, name: str, files: Files | None = None, *, message: str = "initial") -> Repo:
        path = self.root / name
        path.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=path)
        repo = Repo(path)
        repo.commit(files or {"README.md": f"# {name}\n"}, message)
        return repo


@pytest.fixture
def git_repos(tmp_path: Path) -> Iterator[GitRepoFactory]:
    """A GitRepoFactory whose repositories live in this test's tmp_path."""
    yield GitRepoFactory(tmp_path / "repos")
