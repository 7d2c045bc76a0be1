"""MirrorCache against real git repositories served over file://: sync, refs, export, errors, and what git
may never do.
"""

# ruff: noqa: F401, F811  (the `cache`, `repo` and `git_repos` fixtures are imported by name)

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from ferry.domain.errors import InvalidInput, InvalidPath, InvalidRef, RefNotFound, RepositoryError
from services.builder import gitcmd
from services.builder.mirror import MirrorCache
from tests.harness.gitrepo import Repo, git_repos
from tests.integration.mirror_fixtures import cache, repo


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
