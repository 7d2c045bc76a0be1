"""MirrorCache against remote git repositories: ssh (a deploy key on a real sshd host) and https (git http-
backend, a token).
"""

# ruff: noqa: F401, F811  (the `cache`, `repo` and `git_repos` fixtures are imported by name)

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.domain.errors import InvalidInput, RepositoryError
from services.builder.mirror import MirrorCache
from tests.harness.githttp import GitHttpServer, git_http_server
from tests.harness.gitrepo import Repo, git_repos
from tests.harness.sshd import SshdHost
from tests.integration.mirror_fixtures import cache, repo


def _key_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("ferry-ssh-*"))


def test_ssh_key_is_removed_after_a_failed_sync(cache: MirrorCache) -> None:
    before = _key_dirs()
    with pytest.raises(RepositoryError):  # port 9 on loopback: nothing listens
        cache.sync("ssh://git@127.0.0.1:9/app.git", ssh_key="-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    assert _key_dirs() == before


@pytest.fixture
def ssh_repo(sshd_host: SshdHost, repo: Repo) -> tuple[str, str]:
    """``repo`` as a bare repository on a real sshd host; returns (url, known_hosts line)."""
    bare = sshd_host.srv_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    url = f"ssh://root@{sshd_host.address}:{sshd_host.port}/srv/app.git"
    known = f"[{sshd_host.address}]:{sshd_host.port} {sshd_host.host_key_line}\n"
    return url, known


@pytest.mark.sshd
def test_sync_over_ssh_with_a_deploy_key_and_pinned_host_key(
    cache: MirrorCache, sshd_host: SshdHost, ssh_repo: tuple[str, str], repo: Repo
) -> None:
    url, known = ssh_repo
    before = _key_dirs()
    cache.sync(url, ssh_key=sshd_host.client_key_pem, known_hosts=known)
    assert cache.resolve(url, "main") == repo.head
    assert _key_dirs() == before


@pytest.mark.sshd
def test_ssh_sync_refuses_an_unknown_host_key(
    cache: MirrorCache, sshd_host: SshdHost, ssh_repo: tuple[str, str]
) -> None:
    url, _ = ssh_repo
    wrong = f"[{sshd_host.address}]:{sshd_host.port} ssh-ed25519 {'A' * 68}\n"
    with pytest.raises(RepositoryError, match="Host key verification failed"):
        cache.sync(url, ssh_key=sshd_host.client_key_pem, known_hosts=wrong, timeout=60)
    with pytest.raises(RepositoryError):  # the same with no key pinned at all
        cache.sync(url, ssh_key=sshd_host.client_key_pem, known_hosts="", timeout=60)


@pytest.mark.sshd
def test_ssh_sync_without_the_key_fails_without_prompting(
    cache: MirrorCache, ssh_repo: tuple[str, str]
) -> None:
    url, known = ssh_repo
    with pytest.raises(RepositoryError, match="Permission denied"):
        cache.sync(url, ssh_key=None, known_hosts=known, timeout=60)


TOKEN = "ghp_Sup3rSecretT0ken"


@pytest.fixture
def https_server(tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttpServer]:
    """``repo`` served by ``git http-backend`` over HTTPS on loopback, Basic auth ``deploy:TOKEN``."""
    certs = tmp_path / "certs"
    certs.mkdir()
    with git_http_server(repo.path.parent, certs, "deploy", TOKEN) as server:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))  # trust the test CA, as an operator would
        yield server


def _record_git_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``git`` first on PATH that appends its argv and environment to a file, then runs git."""
    bin_dir, log = tmp_path / "bin", tmp_path / "git-argv.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$0 $*" >> {log}\nexec /usr/bin/git "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def _files_under(path: Path) -> Iterator[bytes]:
    for p in path.rglob("*"):
        if p.is_file():
            yield p.read_bytes()


def test_https_token_clones_and_fetches_without_the_token_in_urls_argv_or_config(
    cache: MirrorCache,
    repo: Repo,
    https_server: GitHttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv_log = _record_git_argv(tmp_path, monkeypatch)
    url = https_server.url("app")
    path = cache.sync(url, https_token=f"deploy:{TOKEN}")
    assert cache.resolve(url, "main") == repo.head
    new = repo.commit({"src/app.py": "print('v2')\n"}, "v2")
    cache.sync(url, https_token=f"deploy:{TOKEN}")  # the second time: fetch
    assert cache.resolve(url, "main") == new

    encoded = base64.b64encode(f"deploy:{TOKEN}".encode())
    assert "clone" in argv_log.read_text() and "fetch" in argv_log.read_text()  # the wrapper ran
    assert TOKEN not in argv_log.read_text() and encoded.decode() not in argv_log.read_text()
    for data in _files_under(path):  # config, FETCH_HEAD, logs, packed-refs ...
        assert TOKEN.encode() not in data and encoded not in data
    assert https_server.seen and all(TOKEN not in r.path for r in https_server.seen)
    assert all(r.headers.get("Authorization") == f"Basic {encoded.decode()}" for r in https_server.seen)


def test_https_token_alone_uses_the_token_user(
    cache: MirrorCache, repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    with git_http_server(repo.path.parent, certs, "x-access-token", TOKEN) as server:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
        cache.sync(server.url("app"), https_token=TOKEN)
        assert cache.resolve(server.url("app"), "main") == repo.head


def test_https_without_or_with_a_wrong_token_fails_without_prompting_or_leaking(
    cache: MirrorCache, https_server: GitHttpServer
) -> None:
    url = https_server.url("app")
    with pytest.raises(RepositoryError) as caught:
        cache.sync(url, timeout=60)
    assert "could not read Username" in caught.value.message or "Authentication" in caught.value.message
    with pytest.raises(RepositoryError) as caught:
        cache.sync(url, https_token="deploy:wrong-" + TOKEN, timeout=60)
    assert TOKEN not in caught.value.message and "wrong-" not in caught.value.message
    assert not [p for p in cache.root.iterdir() if p.suffix == ".git"]  # no half-made mirror


def test_an_https_token_is_refused_for_other_remotes(cache: MirrorCache, repo: Repo) -> None:
    for url in (repo.url, "ssh://git@127.0.0.1:9/app.git", "git@127.0.0.1:app.git"):
        with pytest.raises(InvalidInput) as caught:
            cache.sync(url, https_token=TOKEN)
        assert caught.value.field == "repo_credential"
    with pytest.raises(InvalidInput):
        cache.sync("https://127.0.0.1:9/app.git", https_token="deploy:")
