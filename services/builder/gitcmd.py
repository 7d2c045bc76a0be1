"""ferry's ``git`` command on GitPython: safe options, a minimal environment, ferry's errors.

``Repo`` is GitPython's ``git.Repo`` whose ``repo.git.<cmd>(...)`` runs through ``Git`` below:
every process gets ``-c`` options that allow only the https/ssh/file transports and no hooks,
the environment of ``base_env`` (plus what the caller adds, such as ssh or https credentials)
instead of the builder's, and ``run`` turns ``git.exc`` errors into ferry's at this edge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import git
from git.exc import CommandError, GitCommandError

from ferry.domain.errors import RepositoryError
from ferry.domain.validation import display_url

# `git -c` options in front of every command. Transports: only what validate_repo_url accepts
# (ext:: runs arbitrary commands; refs/urls are validated already, this is the second lock on the
# door). No hooks at all: fetch runs reference-transaction hooks, and a mirror needs none.
_GIT_CONFIG = (
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.ssh.allow=always",
    "protocol.file.allow=always",
    "core.hooksPath=/dev/null",
)
# Set by GitPython itself on every call (git/cmd.py, Git.execute); harmless.
_GITPYTHON_ENV = frozenset({"LANGUAGE", "LC_ALL"})


class Git(git.Git):
    """GitPython's command wrapper with ferry's ``-c`` options and a minimal environment.

    ``Git.execute`` starts from a copy of ``os.environ`` and only adds to it, so the builder's
    own variables would reach git and ssh. ``env -u NAME`` drops them (names only, never values,
    appear in argv); the variables git needs come from ``env``, as GitPython passes them.
    """

    def __init__(self, working_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(working_dir)
        self.set_persistent_git_options(c=list(_GIT_CONFIG))

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        env = dict(kwargs.pop("env", None) or base_env())
        drop = sorted(set(os.environ) - set(env) - _GITPYTHON_ENV)
        unset = [arg for name in drop for arg in ("-u", name)]
        return super().execute(["env", *unset, "--", *command], *args, env=env, **kwargs)


class Repo(git.Repo):
    GitCommandWrapperType = Git


def run(
    url: str,
    action: str,
    command: Any,
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    empty_on_status: int | None = None,
) -> str:
    """Run one ``repo.git.<cmd>``; its stdout (utf-8, invalid bytes replaced), or a ferry error.

    ``empty_on_status``: an exit status that means "nothing found" (empty output), not a failure.
    """
    try:
        out = command(*args, env=env, kill_after_timeout=timeout, stdout_as_string=False)
    except GitCommandError as exc:
        if empty_on_status is not None and exc.status == empty_on_status:
            return ""
        raise translate(url, action, exc, timeout=timeout) from exc
    except CommandError as exc:  # GitCommandNotFound: no git binary
        raise translate(url, action, exc) from exc
    return bytes(out).decode("utf-8", "replace")


def translate(url: str, action: str, exc: CommandError, *, timeout: float | None = None) -> RepositoryError:
    if isinstance(exc.status, int) and exc.status < 0 and timeout is not None:
        # kill_after_timeout killed git (and its ssh child): a negative status is the signal.
        return RepositoryError(f"git {action} for {display_url(url)} timed out after {timeout:g}s")
    if not isinstance(exc, GitCommandError):
        return RepositoryError(f"git {action} for {display_url(url)} could not start: {exc.status}")
    # GitPython formats stderr as "\n  stderr: '<text>'"; take the text back out.
    text = exc.stderr.strip().removeprefix("stderr: '").removesuffix("'")
    return git_error(url, action, text)


def git_error(url: str, action: str, stderr: str) -> RepositoryError:
    message = tail(stderr.encode())
    # git may echo the URL it was given; never let a credential inside it out.
    shown = display_url(url)
    if shown != url:
        message = message.replace(url, shown)
    return RepositoryError(f"git {action} failed for {shown}: {message}")


def tail(stderr: bytes, limit: int = 1000) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text[-limit:] if text else "(no output)"


def base_env() -> dict[str, str]:
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
