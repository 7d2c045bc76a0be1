"""A cache of bare mirrors, one per repository URL: clone once, fetch afterwards.

Every git call is one ``git`` process for the whole operation (GitPython would start one
per call anyway, and DESIGN.md warns against per-file calls). User values go after ``--``
or ``--end-of-options`` and are validated first, so a ref can never reach git as an option.
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
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

from ferry.errors import InvalidInput, InvalidPath, RefNotFound, RepositoryError

from .refs import display_url, validate_ref, validate_repo_url

DEFAULT_TIMEOUT = 600.0
LOCAL_TIMEOUT = 120.0

# Highest-precedence attributes, written into every mirror: export the committed bytes as they are,
# ignoring export-ignore/export-subst, eol conversion and filter drivers from the repository's own
# .gitattributes (see gitattributes(5), "$GIT_DIR/info/attributes ... has the highest precedence").
_RAW_ATTRIBUTES = "* -export-ignore -export-subst -text -eol -filter -ident -working-tree-encoding\n"

# Options put in front of every git command. protocol.ext.allow=never: the ext:: transport runs
# arbitrary commands; refs/urls are validated already, this is the second lock on the door.
_GIT_CONFIG = (
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "protocol.fd.allow=never",
)


class RefEntry(TypedDict):
    name: str
    commit: str


class RefListing(TypedDict):
    branches: list[RefEntry]
    tags: list[RefEntry]


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
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.mirror_path(url)
        with self._lock(url), _ssh_env(ssh_key, known_hosts) as env:
            env.update(auth)
            if (path / "HEAD").is_file():
                self._git(url, ["fetch", "--prune", "--quiet", "origin"], cwd=path, env=env, timeout=timeout)
            else:
                self._clone(url, path, env=env, timeout=timeout)
            (path / "info").mkdir(exist_ok=True)
            (path / "info" / "attributes").write_text(_RAW_ATTRIBUTES)
        return path

    def _clone(self, url: str, path: Path, *, env: Mapping[str, str], timeout: float) -> None:
        # Clone beside the final place and rename, so a half-made mirror never looks like one.
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=self.root))
        try:
            self._git(
                url,
                ["clone", "--mirror", "--quiet", "--", url, str(staging)],
                cwd=self.root,
                env=env,
                timeout=timeout,
            )
            if path.exists():  # leftover of a crash between clone and rename, without a HEAD
                shutil.rmtree(path)
            staging.rename(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- local reads ----------------------------------------------------------
    def resolve(self, url: str, ref: str, *, timeout: float = LOCAL_TIMEOUT) -> str:
        """The full commit sha ``ref`` names in the mirror: a branch, a tag (peeled) or a commit prefix."""
        validate_ref(ref)
        path = self._existing(url)
        result = self._run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            cwd=path,
            timeout=timeout,
        )
        sha = result.stdout.decode().strip()
        if result.returncode != 0 or not _is_full_sha(sha):
            raise RefNotFound(f"ref {ref!r} not found in {display_url(url)}", field="ref")
        return sha

    def list_refs(self, url: str, *, timeout: float = LOCAL_TIMEOUT) -> RefListing:
        """Branches and tags of the mirror with the commit each points to (tags peeled), sorted by name."""
        path = self._existing(url)
        fmt = "%(refname)%00%(objecttype)%00%(objectname)%00%(*objecttype)%00%(*objectname)"
        result = self._run(
            ["for-each-ref", f"--format={fmt}", "--", "refs/heads/", "refs/tags/"], cwd=path, timeout=timeout
        )
        if result.returncode != 0:
            raise self._error(url, "list refs", result.stderr)
        listing: RefListing = {"branches": [], "tags": []}
        for line in result.stdout.decode("utf-8", "replace").splitlines():
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

    def export(self, url: str, commit: str, dest: Path, *, timeout: float = LOCAL_TIMEOUT) -> Path:
        """Write the tree of ``commit`` into ``dest`` (absent or empty), byte for byte as committed.

        One ``git archive`` piped into ``tar -x``; .gitattributes (export-ignore, export-subst,
        eol, filters) is not honoured. Submodules are not included.
        """
        validate_ref(commit)
        path = self._existing(url)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidPath(f"export destination {dest} is not an empty directory", field="dest")
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(
            ["git", *_GIT_CONFIG, "archive", "--format=tar", "--end-of-options", f"{commit}^{{commit}}"],
            cwd=path,
            env=_base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert archive.stdout is not None
        try:
            untar = subprocess.run(
                ["tar", "-x", "-f", "-", "-C", str(dest), "--no-same-owner"],
                stdin=archive.stdout,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            archive.stdout.close()
            _, archive_err = archive.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(archive)
            raise RepositoryError(
                f"exporting {commit} from {display_url(url)} timed out after {timeout:g}s"
            ) from exc
        finally:
            if archive.poll() is None:
                _kill_group(archive)
        if archive.returncode != 0 and b"not a valid object name" in archive_err:
            raise RefNotFound(f"commit {commit!r} not found in {display_url(url)}", field="ref")
        if untar.returncode != 0:  # checked before git's status: git dies of SIGPIPE when tar stops
            raise RepositoryError(f"extracting {commit} of {display_url(url)} failed: {_tail(untar.stderr)}")
        if archive.returncode != 0:
            raise self._error(url, f"archive {commit}", archive_err)
        return dest

    # --- plumbing -------------------------------------------------------------
    def _existing(self, url: str) -> Path:
        validate_repo_url(url)
        path = self.mirror_path(url)
        if not (path / "HEAD").is_file():
            raise RepositoryError(f"no mirror of {display_url(url)} yet; sync it first")
        return path

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

    def _git(self, url: str, args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> None:
        result = self._run(args, cwd=cwd, env=env, timeout=timeout, url=url)
        if result.returncode != 0:
            raise self._error(url, args[0], result.stderr)

    def _run(
        self,
        args: list[str],
        *,
        cwd: Path,
        timeout: float,
        env: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        process = subprocess.Popen(
            ["git", *_GIT_CONFIG, *args],
            cwd=cwd,
            env=dict(env) if env is not None else _base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill git and its ssh child together
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(process)
            where = f" for {display_url(url)}" if url else ""
            raise RepositoryError(f"git {args[0]}{where} timed out after {timeout:g}s") from exc
        except BaseException:
            _kill_group(process)
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    @staticmethod
    def _error(url: str, action: str, stderr: bytes) -> RepositoryError:
        message = _tail(stderr)
        # git may echo the URL it was given; never let a credential inside it out.
        shown = display_url(url)
        if shown != url:
            message = message.replace(url, shown)
        return RepositoryError(f"git {action} failed for {shown}: {message}")


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _is_full_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


def _tail(stderr: bytes, limit: int = 1000) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text[-limit:] if text else "(no output)"


def _base_env() -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",  # a server never waits for a password
    }
    if os.environ.get("GIT_SSL_CAINFO"):  # a private CA for https remotes (self-hosted forges)
        env["GIT_SSL_CAINFO"] = os.environ["GIT_SSL_CAINFO"]
    return env


DEFAULT_HTTPS_USER = "x-access-token"  # the user name GitHub documents for tokens; others take any
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    env = _base_env()
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


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
