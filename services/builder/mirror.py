"""A cache of bare mirrors, one per repository URL: clone once, fetch afterwards, on GitPython.

Every operation is one ``git`` process started through GitPython (``repo.git.fetch(...)`` with
an explicit argument list), never a per-object call in a loop (DESIGN.md). User values go after
``--`` or ``--end-of-options`` and are validated first, so a ref can never reach git as an
option. ``gitcmd`` gives every process a minimal environment, no hooks, only the https/ssh/file
transports and a timeout, and turns ``git.exc`` errors into ferry's.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

import git
from git.exc import CommandError, GitError, UnsafeProtocolError

from ferry.domain.errors import InvalidInput, InvalidPath, RefNotFound, RepositoryError
from ferry.domain.validation import display_url, validate_ref, validate_repo_url

from .gitcmd import Git, Repo, base_env, git_error, run, tail, translate

DEFAULT_TIMEOUT = 600.0
LOCAL_TIMEOUT = 120.0
LOG_LIMIT = 200

# Highest-precedence attributes, written into every mirror: export the committed bytes as they are,
# ignoring export-ignore/export-subst, eol conversion and filter drivers from the repository's own
# .gitattributes (see gitattributes(5), "$GIT_DIR/info/attributes ... has the highest precedence").
_RAW_ATTRIBUTES = "* -export-ignore -export-subst -text -eol -filter -ident -working-tree-encoding\n"


class RefEntry(TypedDict):
    name: str
    commit: str


class RefListing(TypedDict):
    branches: list[RefEntry]
    tags: list[RefEntry]


class LogEntry(TypedDict):
    commit: str
    author: str
    date: str
    subject: str


class MirrorCache:
    """Bare mirrors under ``root/<sha256(url)[:16]>.git``, each guarded by ``<same>.lock`` (flock)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def mirror_path(self, url: str) -> Path:
        return self.root / f"{_url_key(url)}.git"

    # --- network --------------------------------------------------------------
    def sync(
        self,
        url: str,
        *,
        ssh_key: str | None = None,
        known_hosts: str | None = None,
        https_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Path:
        """Clone ``url`` as a bare mirror the first time, ``fetch --prune`` it afterwards; return its path.

        ``ssh_key`` is a private key's text, used only for this call. ``known_hosts`` (lines in
        known_hosts format) pins the server's key; without it the user's known_hosts applies.
        Host keys are always checked strictly. ``https_token`` (``TOKEN`` or ``USER:TOKEN``)
        authenticates to an ``https://`` remote (see ``https_auth_env``).
        """
        validate_repo_url(url)
        auth = https_auth_env(url, https_token)
        try:
            git.Git.check_unsafe_protocols(url)  # GitPython's own check, a third lock
        except UnsafeProtocolError as exc:
            raise InvalidInput(
                "invalid repository URL: its transport is not allowed", field="repo_url"
            ) from exc
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.mirror_path(url)
        with self._lock(url), _ssh_env(ssh_key, known_hosts) as env:
            env.update(auth)
            if (path / "HEAD").is_file():
                with self._open(url, path) as repo:
                    run(
                        url,
                        "fetch",
                        repo.git.fetch,
                        ["--prune", "--quiet", "origin"],
                        env=env,
                        timeout=timeout,
                    )
            else:
                self._clone(url, path, env=env, timeout=timeout)
            (path / "info").mkdir(exist_ok=True)
            (path / "info" / "attributes").write_text(_RAW_ATTRIBUTES)
        return path

    def _clone(self, url: str, path: Path, *, env: Mapping[str, str], timeout: float) -> None:
        # Clone beside the final place and rename, so a half-made mirror never looks like one.
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=self.root))
        try:
            args = ["--mirror", "--quiet", "--", url, str(staging)]
            run(url, "clone", Git(self.root).clone, args, env=env, timeout=timeout)
            if path.exists():  # leftover of a crash between clone and rename, without a HEAD
                shutil.rmtree(path)
            staging.rename(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- local reads ----------------------------------------------------------
    def resolve(self, url: str, ref: str, *, timeout: float = LOCAL_TIMEOUT) -> str:
        """The full commit sha ``ref`` names in the mirror: a branch, a tag (peeled) or a commit prefix."""
        validate_ref(ref)
        with self._open(url) as repo:
            args = ["--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"]
            sha = run(url, "rev-parse", repo.git.rev_parse, args, timeout=timeout, empty_on_status=1)
        if not _is_full_sha(sha):
            raise RefNotFound(f"ref {ref!r} not found in {display_url(url)}", field="ref")
        return sha

    def list_refs(self, url: str, *, timeout: float = LOCAL_TIMEOUT) -> RefListing:
        """Branches and tags of the mirror with the commit each points to (tags peeled), sorted by name."""
        fmt = "%(refname)%00%(objecttype)%00%(objectname)%00%(*objecttype)%00%(*objectname)"
        with self._open(url) as repo:
            args = [f"--format={fmt}", "--", "refs/heads/", "refs/tags/"]
            output = run(url, "list refs", repo.git.for_each_ref, args, timeout=timeout)
        listing: RefListing = {"branches": [], "tags": []}
        for line in output.splitlines():
            refname, objtype, sha, peeled_type, peeled_sha = line.split("\0")
            if peeled_type:  # annotated tag: the object it points to
                objtype, sha = peeled_type, peeled_sha
            if objtype != "commit":  # a tag of a tree or blob cannot be released
                continue
            if refname.startswith("refs/heads/"):
                listing["branches"].append({"name": refname.removeprefix("refs/heads/"), "commit": sha})
            elif refname.startswith("refs/tags/"):
                listing["tags"].append({"name": refname.removeprefix("refs/tags/"), "commit": sha})
        return listing

    def log(
        self, url: str, old: str, new: str, *, limit: int = LOG_LIMIT, timeout: float = LOCAL_TIMEOUT
    ) -> list[LogEntry]:
        """Commits reachable from ``new`` but not from ``old``, newest first, at most ``limit``."""
        # Resolved first: a clear RefNotFound rather than git's "bad revision".
        old_sha = self.resolve(url, old, timeout=timeout)
        new_sha = self.resolve(url, new, timeout=timeout)
        with self._open(url) as repo:
            args = [
                "--format=%H%x00%an%x00%aI%x00%s%x00",
                "-z",
                f"--max-count={limit}",
                "--end-of-options",
                f"{old_sha}..{new_sha}",
            ]
            output = run(url, "log", repo.git.log, args, timeout=timeout)
        fields = output.split("\0")
        entries: list[LogEntry] = []
        for i in range(0, len(fields) - 4, 5):
            commit, author, date, subject = (f.strip("\n") for f in fields[i : i + 4])
            entries.append({"commit": commit, "author": author, "date": date, "subject": subject})
        return entries

    def export(self, url: str, commit: str, dest: Path, *, timeout: float = LOCAL_TIMEOUT) -> Path:
        """Write the tree of ``commit`` into ``dest`` (absent or empty), byte for byte as committed.

        One ``git archive`` piped into ``tar -x`` (GitPython hands over the process; the tar
        stream never passes through Python); .gitattributes (export-ignore, export-subst, eol,
        filters) is not honoured. Submodules are not included.
        """
        validate_ref(commit)
        dest = Path(dest)
        with self._open(url) as repo:
            if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
                raise InvalidPath(f"export destination {dest} is not an empty directory", field="dest")
            dest.mkdir(parents=True, exist_ok=True)
            args = ["--format=tar", "--end-of-options", f"{commit}^{{commit}}"]
            try:
                handle = repo.git.archive(*args, as_process=True)
            except CommandError as exc:
                raise translate(url, "archive", exc) from exc
            archive: subprocess.Popen[bytes] = handle.proc
            try:
                untar = subprocess.run(
                    ["tar", "-x", "-f", "-", "-C", str(dest), "--no-same-owner"],
                    stdin=archive.stdout,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                assert archive.stdout is not None
                archive.stdout.close()  # so git gets SIGPIPE if tar stopped early
                _, archive_err = archive.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise RepositoryError(
                    f"exporting {commit} from {display_url(url)} timed out after {timeout:g}s"
                ) from exc
            finally:
                _kill(archive)
        if archive.returncode != 0 and b"not a valid object name" in archive_err:
            raise RefNotFound(f"commit {commit!r} not found in {display_url(url)}", field="ref")
        if untar.returncode != 0:  # checked before git's status: git dies of SIGPIPE when tar stops
            raise RepositoryError(f"extracting {commit} of {display_url(url)} failed: {tail(untar.stderr)}")
        if archive.returncode != 0:
            raise git_error(url, f"archive {commit}", archive_err.decode("utf-8", "replace"))
        return dest

    # --- garbage collection ---------------------------------------------------
    def collect(
        self, live_urls: Collection[str], *, older_than: float, now: float | None = None
    ) -> list[Path]:
        """Remove the mirrors not synced for ``older_than`` seconds whose URL no project uses any more.

        ``sync`` rewrites ``info/attributes`` each time, so its mtime is the last fetch. A mirror
        another builder holds (its lock taken) is left for the next pass."""
        now = time.time() if now is None else now
        live = {self.mirror_path(u).name for u in live_urls}
        removed: list[Path] = []
        for path in sorted(self.root.glob("*.git")) if self.root.is_dir() else []:
            if path.name in live:
                continue
            stamp = path / "info" / "attributes"
            synced = (stamp if stamp.exists() else path).stat().st_mtime
            if now - synced < older_than:
                continue
            fd = os.open(self.root / f"{path.name.removesuffix('.git')}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            finally:
                os.close(fd)
        return removed

    # --- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, url: str, path: Path | None = None) -> Iterator[Repo]:
        """The mirror of ``url`` as a GitPython ``Repo``; a clear error when there is none yet."""
        validate_repo_url(url)
        path = path or self.mirror_path(url)
        if not (path / "HEAD").is_file():
            raise RepositoryError(f"no mirror of {display_url(url)} yet; sync it first")
        try:
            repo = Repo(path)
        except GitError as exc:
            raise RepositoryError(
                f"the mirror of {display_url(url)} is damaged: {type(exc).__name__}"
            ) from exc
        with repo:
            yield repo

    @contextlib.contextmanager
    def _lock(self, url: str) -> Iterator[None]:
        # flock locks belong to the open file description, so this serialises threads of one
        # process as well as separate builder processes sharing the cache directory.
        fd = os.open(self.root / f"{_url_key(url)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _is_full_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_HTTPS_USER = "x-access-token"  # the user name GitHub documents for tokens; others take any


def https_auth_env(url: str, token: str | None) -> dict[str, str]:
    """Environment that makes one git call send ``Authorization: Basic`` to ``url``'s origin only.

    The header is configuration in git's environment (``GIT_CONFIG_COUNT``/``KEY_n``/``VALUE_n``,
    git >= 2.31), scoped with ``http.<origin>/.extraHeader``: the token is never in a URL, an
    argv, the mirror's config or a credential helper's store (the helper list is emptied), and
    git's traces redact it.
    ``token`` is ``TOKEN`` (user ``x-access-token``) or ``USER:TOKEN``. Only for https remotes.
    """
    if token is None:
        return {}
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or parts.hostname is None:
        raise InvalidInput(
            "an https token works only for https:// remotes; use an SSH key for ssh remotes",
            field="repo_credential",
        )
    user, sep, secret = token.strip().partition(":")
    if not sep:
        user, secret = DEFAULT_HTTPS_USER, user
    if not user or not secret or _CONTROL.search(user + secret):
        raise InvalidInput("the https token credential is empty or malformed", field="repo_credential")
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    origin = f"https://{host}" + (f":{parts.port}" if parts.port is not None else "") + "/"
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"http.{origin}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        "GIT_CONFIG_KEY_1": "credential.helper",  # empty: no configured helper fills or stores
        "GIT_CONFIG_VALUE_1": "",
    }


@contextlib.contextmanager
def _ssh_env(ssh_key: str | None, known_hosts: str | None) -> Iterator[dict[str, str]]:
    """The environment for a network git call; key material lives in a 0700 temp dir for the call only."""
    env = base_env()
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if ssh_key is None and known_hosts is None:
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        yield env
        return
    secrets = Path(tempfile.mkdtemp(prefix="ferry-ssh-"))
    try:
        if ssh_key is not None:
            key_path = secrets / "id"
            _write_private(key_path, ssh_key if ssh_key.endswith("\n") else ssh_key + "\n")
            ssh += ["-i", str(key_path), "-o", "IdentitiesOnly=yes"]
        if known_hosts is not None:
            hosts_path = secrets / "known_hosts"
            _write_private(hosts_path, known_hosts)
            ssh += ["-o", f"UserKnownHostsFile={hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        yield env
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _kill(process: subprocess.Popen[bytes]) -> None:
    # git archive of a local commit starts no children; killing git itself is enough.
    if process.poll() is None:
        process.kill()
    process.wait()
