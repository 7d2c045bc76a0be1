"""Capistrano layout on a host, one function per step, over a `HostSession`.

    <deploy_path>/releases/<release_id>/    extracted artifact (+ .ferry-artifact: its digest)
    <deploy_path>/shared/                    files and dirs kept across releases
    <deploy_path>/current -> releases/<id>   switched with rename(2)
    <deploy_path>/.ferry/artifacts/<digest>.tar[.zst|.gz]   the host's artifact cache
    <deploy_path>/.ferry/manifests/<release_id>.gz   what each release holds (delta uploads)

Releases built by a delta upload share unchanged files' inodes with older releases (hard
links), so no step may write into a release's files in place: replace paths (link_shared's
rm + ln -s, a hook's write-to-temp-and-rename), never open them for writing.

Every function is safe to re-run after a crash at any point, and every path
that reaches a shell is validated and quoted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ferry.domain.errors import InvalidInput
from ferry.domain.masking import Masker
from services.agent.layout import (
    FORMATS,
    GUARD,
    MARKER,
    RELEASE_ID_RE,
    StepResult,
    ferry_env,
    parent_of,
    q,
    release_of,
    script,
    step_result,
    validate_deploy_path,
    validate_digest,
    validate_relative_path,
    validate_release_id,
    value,
    values,
)
from services.agent.ssh import HostSession
from services.agent.upload import host_has_artifact, upload_artifact

__all__ = [
    "FORMATS",
    "MARKER",
    "StepResult",
    "ferry_env",
    "validate_deploy_path",
    "validate_digest",
    "validate_relative_path",
    "validate_release_id",
    "prepare",
    "host_has_artifact",
    "upload_artifact",
    "link_shared",
    "run_hook",
    "activate",
    "rollback",
    "current_release",
    "restart",
    "prune",
    "masked",
]


# --- secret variables in output ------------------------------------------------
TRUNCATED = "[ferry] output truncated"
"""How ``ssh._Tail`` marks an output whose beginning was dropped (a value may be cut there)."""


def masked(result: StepResult, masker: Masker) -> StepResult:
    """``result`` with every secret variable's value in its output and detail replaced by ``***``.

    Host commands see the project's secret variables (``ferry_env``); their output is masked
    here, before the agent records it anywhere (events, the object store, failure reasons).
    """
    if not masker:
        return result
    output = result.output
    head, newline, body = output.partition("\n")
    if output.startswith(TRUNCATED) and newline:
        output = head + newline + masker.cut_text(body)
    else:
        output = masker.text(output)
    return replace(result, output=output, detail=_masked_detail(result.detail, masker))


def _masked_detail(value: Any, masker: Masker) -> Any:
    if isinstance(value, str):
        return masker.text(value)
    if isinstance(value, dict):
        return {k: _masked_detail(v, masker) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked_detail(v, masker) for v in value]
    return value


# --- steps -----------------------------------------------------------------
def prepare(session: HostSession, deploy_path: str, *, timeout: float = 60.0) -> StepResult:
    """Create releases/, shared/ and .ferry/ under the deploy path."""
    dp = validate_deploy_path(deploy_path)
    result = session.run(
        f"mkdir -p {q(dp + '/releases')} {q(dp + '/shared')} {q(dp + '/.ferry/artifacts')}",
        timeout=timeout,
    )
    return step_result(result, {"deploy_path": dp})


def link_shared(
    session: HostSession,
    deploy_path: str,
    release_id: str,
    shared_files: Iterable[str] = (),
    shared_dirs: Iterable[str] = (),
    *,
    timeout: float = 60.0,
) -> StepResult:
    """Point release/<p> at shared/<p> for each shared file and dir (creating them under shared/).

    Refuses (exit 5, nothing written past the refusal) a path whose parents in the release are
    symlinks or not directories: a committed `config -> /etc` cannot turn
    `shared_dirs: [config/nginx]` into root deleting /etc/nginx.
    """
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    files = [validate_relative_path(p, "shared_files") for p in shared_files]
    dirs = [validate_relative_path(p, "shared_dirs") for p in shared_dirs]
    rel = f"releases/{release_id}"
    lines = [
        GUARD,
        f"cd {q(dp)}",
        f"test -d {q(rel)} || {{ echo 'no such release: {rel}' >&2; exit 2; }}",
        f'rel_root="$(ferry_root {q(rel)})"',
    ]
    # Every path is checked (its parents created inside the release) before anything is written.
    for p in [*dirs, *files]:
        lines.append(f'ferry_mkdirs "$rel_root" {q(parent_of(p))} {q(f"link {rel}/{p}")}')
    for p in dirs:
        lines.append(f"mkdir -p {q('shared/' + p)}")  # shared/ is the operator's: their links count
    for p in files:
        shared = q("shared/" + p)
        lines.append(f'mkdir -p "$(dirname {shared})"; [ -e {shared} ] || [ -L {shared} ] || : > {shared}')
    for p in [*dirs, *files]:
        target = f'"$rel_root"/{q(p)}'
        lines += [
            f"rm -rf {target}",  # removes a symlink itself, never what it points at
            f"ln -sn {q(f'{dp}/shared/{p}')} {target}",
            f"echo linked {q(f'{rel}/{p}')}",
        ]
    result = session.run(script(*lines), timeout=timeout)
    return step_result(result, {"files": files, "dirs": dirs})


def run_hook(
    session: HostSession,
    deploy_path: str,
    release_id: str,
    command: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> StepResult:
    """Run a project hook in the release dir; no command means a skipped step."""
    dp = validate_deploy_path(deploy_path)
    validate_release_id(release_id)
    if not command or not command.strip():
        return StepResult(0, "", 0.0, {"skipped": True})
    result = session.run(
        command,
        env=ferry_env(session, dp, release_id, env),
        cwd=f"{dp}/releases/{release_id}",
        timeout=timeout,
    )
    return step_result(result, {"skipped": False})


def _switch(session: HostSession, dp: str, release_id: str, timeout: float) -> StepResult:
    rel = f"releases/{release_id}"
    link = f"current.tmp-{secrets.token_hex(6)}"
    result = session.run(
        script(
            f"cd {q(dp)}",
            f"test -d {q(rel)} || {{ echo 'no such release: {rel}' >&2; exit 2; }}",
            "mkdir -p .ferry",
            'prev="$(readlink current 2>/dev/null || true)"',
            f'if [ "$prev" = {q(rel)} ]; then',
            '  echo "FERRY_LAST=$(cat .ferry/last-switch 2>/dev/null || true)"',
            "  echo FERRY_ALREADY=1",
            "  exit 0",
            "fi",
            # Remember what this switch replaced, so a re-run after a crash still reports it.
            f"printf '%s %s\\n' {release_id} \"${{prev##*/}}\" > .ferry/last-switch.tmp",
            "mv -f .ferry/last-switch.tmp .ferry/last-switch",
            f"ln -sfn {q(rel)} {link}",
            f"mv -T {link} current",  # rename(2): atomic
            'echo "FERRY_PREVIOUS=$prev"',
        ),
        timeout=timeout,
    )
    detail: dict[str, Any] = {"release": release_id, "previous": None, "already_current": False}
    if result.ok:
        if value(result.output, "FERRY_ALREADY") == "1":
            detail["already_current"] = True
            last = (value(result.output, "FERRY_LAST") or "").split()
            if len(last) == 2 and last[0] == release_id:
                detail["previous"] = last[1]
        else:
            detail["previous"] = release_of(value(result.output, "FERRY_PREVIOUS"))
    return step_result(result, detail)


def activate(session: HostSession, deploy_path: str, release_id: str, *, timeout: float = 60.0) -> StepResult:
    """Point `current` at releases/<release_id> atomically; detail['previous'] is the release it replaced."""
    return _switch(session, validate_deploy_path(deploy_path), validate_release_id(release_id), timeout)


def rollback(
    session: HostSession, deploy_path: str, to_release_id: str, *, timeout: float = 60.0
) -> StepResult:
    """Switch `current` back to an earlier release, atomically (restart separately)."""
    return _switch(session, validate_deploy_path(deploy_path), validate_release_id(to_release_id), timeout)


def holds_release(
    session: HostSession, deploy_path: str, release_id: str, digest: str, *, timeout: float = 30.0
) -> bool:
    """Whether releases/<release_id> is on the host, a real directory, extracted from ``digest``."""
    dp = validate_deploy_path(deploy_path)
    rel = f"releases/{validate_release_id(release_id)}"
    marker = q(f"{rel}/{MARKER}")
    result = session.run(
        script(
            f"cd {q(dp)}",
            f"if [ -d {q(rel)} ] && [ ! -L {q(rel)} ] && [ ! -L {marker} ] "
            f'&& [ "$(cat {marker} 2>/dev/null)" = {q(validate_digest(digest))} ]; then',
            "  echo FERRY_HOLDS=1",
            "fi",
        ),
        timeout=timeout,
    )
    return value(result.output, "FERRY_HOLDS") == "1"


def current_release(session: HostSession, deploy_path: str, *, timeout: float = 30.0) -> str | None:
    dp = validate_deploy_path(deploy_path)
    result = session.run(f"readlink {q(dp + '/current')} || true", timeout=timeout)
    return release_of(result.output.strip())


def restart(
    session: HostSession,
    deploy_path: str,
    command: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> StepResult:
    """Run the project's restart command in `current`."""
    dp = validate_deploy_path(deploy_path)
    if not command or not command.strip():
        return StepResult(0, "", 0.0, {"skipped": True})
    release_id = current_release(session, dp)
    if release_id is None:
        return StepResult(1, f"{dp}/current does not exist; nothing to restart\n", 0.0, {"skipped": False})
    result = session.run(
        command, env=ferry_env(session, dp, release_id, env), cwd=f"{dp}/current", timeout=timeout
    )
    return step_result(result, {"skipped": False, "release": release_id})


def prune(
    session: HostSession,
    deploy_path: str,
    keep: int,
    protect: Iterable[str] = (),
    *,
    timeout: float = 300.0,
) -> StepResult:
    """Remove all but the newest `keep` releases; never the live one or those in `protect`."""
    started = time.monotonic()
    dp = validate_deploy_path(deploy_path)
    if keep < 1:
        raise InvalidInput("keep must be at least 1", field="keep")
    protected = {validate_release_id(r) for r in protect}
    listing = session.run(
        script(
            f"cd {q(dp)}",
            'echo "FERRY_CURRENT=$(readlink current 2>/dev/null || true)"',
            "find releases -mindepth 1 -maxdepth 1 -type d -printf 'FERRY_RELEASE=%T@ %f\\n'",
        ),
        timeout=timeout,
    )
    if not listing.ok:
        return step_result(listing, {}, started)
    live = release_of(value(listing.output, "FERRY_CURRENT"))
    releases = []
    for row in values(listing.output, "FERRY_RELEASE"):
        mtime, _, name = row.partition(" ")
        if RELEASE_ID_RE.match(name):  # skips .tmp-* dirs of uploads in progress
            releases.append((float(mtime), name))
    releases.sort(reverse=True)
    newest = {name for _, name in releases[:keep]}
    spared = newest | protected | ({live} if live else set())
    victims = [name for _, name in releases if name not in spared]
    removal = " ".join(q(f"releases/{v}") for v in victims)
    result = session.run(
        script(
            f"cd {q(dp)}",
            f"rm -rf -- {removal}" if victims else "true",
            # Drop cached archives that no remaining release was extracted from (dot-files are partials).
            f'inuse="$(cat releases/*/{MARKER} 2>/dev/null | tr "\\n" " " || true)"',
            "for f in .ferry/artifacts/*; do",
            '  [ -f "$f" ] || continue',
            '  d="${f##*/}"; d="${d%%.*}"',
            '  case " $inuse " in *" $d "*) ;; *) rm -f -- "$f"; echo "FERRY_ARTIFACT_REMOVED=$d" ;; esac',
            "done",
            # A release's manifest (a delta upload's base) goes with its release.
            "for f in .ferry/manifests/*.gz; do",
            '  r="${f##*/}"; r="${r%.gz}"',
            '  if [ -f "$f" ] && [ ! -d "releases/$r" ]; then rm -f -- "$f"; fi',
            "done",
        ),
        timeout=timeout,
    )
    detail = {
        "removed": victims,
        "kept": sorted(name for _, name in releases if name in spared),
        "live": live,
        "artifacts_removed": values(result.output, "FERRY_ARTIFACT_REMOVED"),
    }
    summary = "".join(f"removed releases/{v}\n" for v in victims) or "nothing to prune\n"
    return StepResult(result.exit_code, summary + result.output, time.monotonic() - started, detail)
