"""The Capistrano layout on a host: its paths, their validation, and the shell helpers steps share.

<deploy_path>/releases/<release_id>/    extracted artifact (+ .ferry-artifact: its digest)
<deploy_path>/shared/                    files and dirs kept across releases
<deploy_path>/current -> releases/<id>   switched with rename(2)
<deploy_path>/.ferry/artifacts/<digest>.tar[.zst|.gz]   the host's artifact cache
<deploy_path>/.ferry/manifests/<release_id>.gz   per-file digests and mtimes of each release (deltas)
<deploy_path>/.ferry/delta-<release_id>/     staging of a delta upload in progress

A release assembled by a delta upload hard-links its unchanged files from an older release:
steps and hooks must replace files in a release (write elsewhere, rename), never write into them,
or they would change every release sharing that inode.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The checks of paths, release ids and digests live in ferry.domain.validation (the gateway uses them
# too); the agent's modules keep importing them from here.
from ferry.domain.validation import DIGEST_RE as DIGEST_RE
from ferry.domain.validation import RELEASE_ID_RE as RELEASE_ID_RE
from ferry.domain.validation import validate_deploy_path as validate_deploy_path
from ferry.domain.validation import validate_digest as validate_digest
from ferry.domain.validation import validate_relative_path as validate_relative_path
from ferry.domain.validation import validate_release_id as validate_release_id
from services.agent.ssh import CommandResult, HostSession

# format -> (suffix in the cache, tar's decompression flag)
FORMATS: dict[str, tuple[str, list[str]]] = {
    "zst": (".tar.zst", ["--zstd"]),
    "gz": (".tar.gz", ["-z"]),
    "none": (".tar", []),
}
SUFFIX_FORMAT = {suffix: fmt for fmt, (suffix, _) in FORMATS.items()}
MARKER = ".ferry-artifact"
# How root extracts an artifact on a host (always inside `umask 0`): files owned by the SSH user,
# never the archive's uid/gid; permission bits as archived (so executables stay executable and
# modes match the manifest a delta upload checks) but without setuid, setgid or sticky, which
# GNU tar drops when it does not restore permissions exactly. GNU tar also refuses members named
# with '..', strips a leading '/', and defers symlinks that point outside the tree until the end,
# so no member is ever written through one: a member that would escape fails the extraction.
EXTRACT_FLAGS = "--no-same-owner --no-same-permissions"
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    output: str
    duration: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# --- writing under a release -----------------------------------------------------
# A release's own symlinks (a committed `config -> /etc`) must never redirect where ferry writes
# as root. `ferry_mkdirs ROOT DIR WHAT` creates DIR under ROOT (a physical path) one component at
# a time, refusing any component that is a symlink or not a directory, then checks that DIR
# resolves to exactly ROOT/DIR. Nothing else writes into a release while a step runs (it is not
# live yet, its hooks have not run), so the check holds for the write that follows it.
# `ferry_root DIR` prints DIR's physical path, refusing a DIR that is itself a symlink.
# Exit status 5 means "refused"; nothing after the refusal runs.
REFUSED_EXIT = 5
GUARD = r"""ferry_refuse() { echo "ferry: refusing to $1" >&2; exit 5; }
ferry_mkdirs() {
  _cur=$1; _rest=$2
  while [ -n "$_rest" ]; do
    _part=${_rest%%/*}
    case $_rest in */*) _rest=${_rest#*/} ;; *) _rest= ;; esac
    _cur=$_cur/$_part
    if [ -L "$_cur" ]; then
      ferry_refuse "$3: ${_cur#"$1"/} in the release is a symlink (to $(readlink "$_cur"));\
 ferry never writes through a release's symlinks"
    elif [ ! -e "$_cur" ]; then
      mkdir "$_cur"
    elif [ ! -d "$_cur" ]; then
      ferry_refuse "$3: ${_cur#"$1"/} in the release is not a directory"
    fi
  done
  [ "$(realpath -e "$_cur")" = "$_cur" ] || ferry_refuse "$3: its parent resolves outside the release"
}
ferry_root() {
  if [ -L "$1" ] || [ ! -d "$1" ]; then ferry_refuse "write into $1: it is not a directory of its own"; fi
  realpath -e "$1"
}
"""


def parent_of(path: str) -> str:
    """'a/b/c' -> 'a/b'; 'c' -> '' (a validated relative path)."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


# --- helpers -----------------------------------------------------------------
def ferry_env(
    session: HostSession,
    deploy_path: str,
    release_id: str | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every hook, restart and health command sees (ferry's names win over extras)."""
    env = dict(extra or {})
    env.update(
        FERRY_DEPLOY_PATH=deploy_path,
        FERRY_HOST_ADDRESS=session.target.address,
        FERRY_HOST_NAME=session.target.name,
    )
    if release_id is not None:
        env.update(FERRY_RELEASE_ID=release_id, FERRY_RELEASE_PATH=f"{deploy_path}/releases/{release_id}")
    return env


def q(path: str) -> str:
    return shlex.quote(path)


def script(*lines: str) -> str:
    return "set -e\n" + "\n".join(lines) + "\n"


def step_result(
    result: CommandResult, detail: dict[str, Any] | None = None, started: float | None = None
) -> StepResult:
    duration = time.monotonic() - started if started is not None else result.duration
    return StepResult(result.exit_code, result.output, duration, detail or {})


def values(output: str, key: str) -> list[str]:
    prefix = f"{key}="
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def value(output: str, key: str) -> str | None:
    found = values(output, key)
    return found[-1] if found else None


def release_of(target: str | None) -> str | None:
    """'releases/<id>' (or an absolute path to it) -> '<id>'; '' or None -> None."""
    if not target:
        return None
    return target.rstrip("/").rsplit("/", 1)[-1]
