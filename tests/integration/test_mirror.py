"""MirrorCache against real git repositories served over file://, ssh (sshd) and https (git http-backend)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.domain.errors import InvalidInput, InvalidPath, InvalidRef, RefNotFound, RepositoryError
from services.builder import gitcmd
from services.builder.mirror import MirrorCache
from tests.harness.githttp import GitHttpServer, git_http_server
from tests.harness.gitrepo import GitRepoFactory, Repo, git_repos  # noqa: F401
from tests.harness.sshd import SshdHost


@pytest.fixture
def cache(tmp_path: Path) -> MirrorCache:
    return MirrorCache(tmp_path / "mirrors")


@pytest.fixture
def repo(git_repos: GitRepoFactory) -> Repo:  # noqa: F811
    return git_repos.create("app", {"README.md": "hello\n", "src/app.py": "print('v1')\n"})


def test_first_sync_clones_a_bare_mirror_named_after_the_url(cache: MirrorCache, repo: Repo) -> None:
    path = cache.sync(repo.url)
    assert path.parent == cache.root
    assert path.name.endswith(".git") and len(path.name) == 16 + 4
    assert (path / "HEAD").is_file() and not (path / "README.md").exists()
    assert cache.resolve(repo.url, "main") == repo.head
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_second_sync_fetches_new_commits_without_recloning(cache: MirrorCache, repo: Repo) -> None:
    path = cache.sync(repo.url)
    inode = path.stat().st_ino
    objects_inode = (path / "objects").stat().st_ino
    old = repo.head
    new = repo.commit({"src/app.py": "print('v2')\n"}, "v2")

    assert cache.resolve(repo.url, "main") == old  # not fetched yet
    assert cache.sync(repo.url) == path
    assert cache.resolve(repo.url, "main") == new
    assert path.stat().st_ino == inode
    assert (path / "objects").stat().st_ino == objects_inode


def test_sync_prunes_deleted_branches(cache: MirrorCache, repo: Repo) -> None:
    repo.branch("short-lived")
    cache.sync(repo.url)
    assert cache.resolve(repo.url, "short-lived") == repo.head
    repo.delete_branch("short-lived")
    cache.sync(repo.url)
    with pytest.raises(RefNotFound):
        cache.resolve(repo.url, "short-lived")


def test_concurrent_syncs_of_one_repository_do_not_collide(cache: MirrorCache, repo: Repo) -> None:
    errors: list[BaseException] = []
    paths: list[Path] = []

    def sync() -> None:
        try:
            paths.append(cache.sync(repo.url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(paths)) == 1
    assert cache.resolve(repo.url, "main") == repo.head


def test_resolve_branch_tag_annotated_tag_and_short_sha(cache: MirrorCache, repo: Repo) -> None:
    first = repo.head
    repo.tag("v1.0")
    repo.tag("v1.0-annotated", message="release 1.0")
    feature = repo.branch("feature/x", checkout=True)
    second = repo.commit({"feature.txt": "x\n"}, "feature")
    repo.checkout("main")
    cache.sync(repo.url)

    assert cache.resolve(repo.url, "main") == first
    assert cache.resolve(repo.url, "refs/heads/main") == first
    assert cache.resolve(repo.url, "v1.0") == first
    assert cache.resolve(repo.url, "v1.0-annotated") == first  # peeled to the commit, not the tag object
    assert cache.resolve(repo.url, "refs/tags/v1.0-annotated") == first
    assert cache.resolve(repo.url, "feature/x") == second != feature
    assert cache.resolve(repo.url, second[:7]) == second
    assert cache.resolve(repo.url, second) == second


@pytest.mark.parametrize("ref", ["nope", "feature/none", "refs/heads/nope", "0" * 40, "abcdef12"])
def test_unknown_ref_is_ref_not_found(cache: MirrorCache, repo: Repo, ref: str) -> None:
    cache.sync(repo.url)
    with pytest.raises(RefNotFound) as caught:
        cache.resolve(repo.url, ref)
    assert caught.value.field == "ref"
    assert ref in caught.value.message


def test_option_shaped_ref_is_refused_and_never_runs(cache: MirrorCache, repo: Repo, tmp_path: Path) -> None:
    cache.sync(repo.url)
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    for ref in (f"--upload-pack=touch {marker}", f"--output={marker}", f"-o{marker}"):
        with pytest.raises(InvalidRef) as caught:
            cache.resolve(repo.url, ref)
        assert caught.value.field == "ref"
        with pytest.raises(InvalidRef):
            cache.export(repo.url, ref, tmp_path / "out")
    assert not marker.exists()


def test_option_shaped_url_is_refused_before_git_runs(cache: MirrorCache, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for url in (f"--upload-pack=touch {marker}", f"ext::sh -c touch% {marker}"):
        with pytest.raises(InvalidInput):
            cache.sync(url)
    assert not marker.exists()
    assert not cache.root.exists() or list(cache.root.glob("*.git")) == []


def test_list_refs_peels_tags_and_sorts_by_name(cache: MirrorCache, repo: Repo) -> None:
    first = repo.head
    repo.tag("v1.0", message="annotated")
    second = repo.commit({"b.txt": "b\n"}, "second")
    repo.tag("v2.0")
    repo.branch("release/2.x")
    cache.sync(repo.url)

    assert cache.list_refs(repo.url) == {
        "branches": [{"name": "main", "commit": second}, {"name": "release/2.x", "commit": second}],
        "tags": [{"name": "v1.0", "commit": first}, {"name": "v2.0", "commit": second}],
    }


def test_export_writes_exactly_the_committed_files(cache: MirrorCache, repo: Repo, tmp_path: Path) -> None:
    old = repo.head
    repo.write({"script.sh": "#!/bin/sh\necho hi\n"})
    (repo.path / "script.sh").chmod(0o755)
    new = repo.commit(
        {
            "src/app.py": "print('v2')\n",
            "README.md": None,
            "data/blob.bin": bytes(range(256)) * 64,
            "crlf.txt": "one\r\ntwo\r\n",
            # attributes that git archive would honour; export must not
            ".gitattributes": "ignored.txt export-ignore\nsubst.txt export-subst\n*.txt eol=crlf\n",
            "ignored.txt": "still here\n",
            "subst.txt": "$Format:%H$\n",
        },
        "v2",
    )
    repo.write({"untracked.txt": "not committed\n"})
    cache.sync(repo.url)

    dest = tmp_path / "tree"
    assert cache.export(repo.url, new, dest) == dest
    on_disk = {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}
    assert on_disk == repo.tracked_files(new)
    assert os.access(dest / "script.sh", os.X_OK)
    assert not (dest / ".git").exists()

    old_dest = tmp_path / "old"
    cache.export(repo.url, old, old_dest)
    assert sorted(p.name for p in old_dest.rglob("*") if p.is_file()) == ["README.md", "app.py"]


def test_export_refuses_a_non_empty_destination(cache: MirrorCache, repo: Repo, tmp_path: Path) -> None:
    cache.sync(repo.url)
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(InvalidPath):
        cache.export(repo.url, repo.head, dest)


def test_export_of_unknown_commit_is_ref_not_found(cache: MirrorCache, repo: Repo, tmp_path: Path) -> None:
    cache.sync(repo.url)
    with pytest.raises(RefNotFound):
        cache.export(repo.url, "0" * 40, tmp_path / "out")


def test_reads_before_any_sync_say_so(cache: MirrorCache, repo: Repo) -> None:
    with pytest.raises(RepositoryError, match="sync it first"):
        cache.resolve(repo.url, "main")


def test_git_failure_names_the_repository(cache: MirrorCache, tmp_path: Path) -> None:
    missing = (tmp_path / "no-such-repo").as_uri()
    with pytest.raises(RepositoryError) as caught:
        cache.sync(missing)
    assert missing in caught.value.message
    assert not list(cache.root.glob("*.git"))


def test_credentials_never_appear_in_errors(cache: MirrorCache) -> None:
    url = "https://deploy:s3cret-token@127.0.0.1:9/org/app.git"  # port 9: nothing listens
    with pytest.raises(RepositoryError) as caught:
        cache.sync(url, timeout=30)
    assert "s3cret-token" not in str(caught.value)
    assert "127.0.0.1:9/org/app.git" in caught.value.message


def test_log_lists_the_commits_between_two_refs(cache: MirrorCache, repo: Repo) -> None:
    first = repo.head
    repo.tag("v1")
    second = repo.commit({"a.txt": "a\n"}, "add a")
    third = repo.commit({"b.txt": "b\n"}, "add b\n\nwith a body")
    cache.sync(repo.url)

    log = cache.log(repo.url, "v1", "main")
    assert [(e["commit"], e["subject"]) for e in log] == [(third, "add b"), (second, "add a")]
    assert log[0]["author"] == "Ferry Test" and log[0]["date"][:2] == "20"
    assert cache.log(repo.url, "main", "v1") == []
    assert [e["commit"] for e in cache.log(repo.url, first, third, limit=1)] == [third]
    with pytest.raises(RefNotFound):
        cache.log(repo.url, "v1", "nope")
    with pytest.raises(InvalidRef):
        cache.log(repo.url, "--output=/tmp/x", "main")


def test_the_builders_environment_does_not_reach_git(
    cache: MirrorCache, repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = repo.head  # the test harness's git sees the variables below; the mirror's must not
    # Variables git honours would redirect it if they leaked from the builder's environment.
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.bare'='false'")
    monkeypatch.setenv("FERRY_CANARY_SECRET", "do-not-leak")
    cache.sync(repo.url)
    assert cache.resolve(repo.url, "main") == head

    out = gitcmd.Git(tmp_path).execute(["git", "-c", "alias.envdump=!env", "envdump"])
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert "FERRY_CANARY_SECRET" not in names and "GIT_DIR" not in names
    assert {"PATH", "HOME", "GIT_TERMINAL_PROMPT"} <= names


def test_hooks_in_a_mirror_never_run(cache: MirrorCache, repo: Repo, tmp_path: Path) -> None:
    path = cache.sync(repo.url)
    marker = tmp_path / "hook-ran"
    hook = path / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    new = repo.commit({"c.txt": "c\n"}, "c")
    cache.sync(repo.url)
    assert cache.resolve(repo.url, "main") == new
    assert not marker.exists()


def test_a_silent_server_is_killed_after_the_timeout(cache: MirrorCache) -> None:
    # A listening socket nobody accepts from: the TCP connection opens, ssh waits for a banner.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(RepositoryError, match="timed out after 1s"):
            cache.sync(f"ssh://git@127.0.0.1:{port}/app.git", known_hosts="", timeout=1)
    assert not list(cache.root.glob("*.git"))


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
