"""Health checks after a restart: a command on the host, or an HTTP GET from the agent."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from ferry.domain.errors import InvalidInput
from services.agent.remote import StepResult, current_release, ferry_env, validate_deploy_path
from services.agent.ssh import HostSession

MAX_RETRIES = 100
MAX_DELAY = 60.0


def resolve_url(url: str, address: str) -> str:
    """Substitute the host's address for `{address}` (bracketed when it is IPv6)."""
    host = f"[{address}]" if ":" in address else address
    resolved = url.replace("{address}", host)
    if not resolved.startswith(("http://", "https://")):
        raise InvalidInput(f"health check URL must be http(s): {url!r}", field="health_url")
    return resolved


def health_check(
    session: HostSession,
    deploy_path: str,
    *,
    command: str | None = None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    retries: int = 3,
    delay: float = 1.0,
) -> StepResult:
    """Check the live release: up to 1 + `retries` attempts, `delay` seconds apart; exit 0 on the first pass.

    A command runs on the host in `current` (exit 0 passes); a URL is fetched from the agent
    (2xx passes). Every attempt is summarised in the output and in detail['attempts'].
    """
    if (command is None) == (url is None):
        raise InvalidInput("a health check needs exactly one of command and url", field="health_check")
    if not 0 <= retries <= MAX_RETRIES:
        raise InvalidInput(f"retries must be between 0 and {MAX_RETRIES}", field="retries")
    if not 0 <= delay <= MAX_DELAY:
        raise InvalidInput(f"delay must be between 0 and {MAX_DELAY:g} seconds", field="delay")
    dp = validate_deploy_path(deploy_path)
    started = time.monotonic()
    attempts: list[dict[str, Any]] = []
    lines: list[str] = []
    total = retries + 1

    if url is not None:
        target = resolve_url(url, session.target.address)
        # trust_env=False: a proxy from the environment must never sit between the agent and its hosts.
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            for n in range(1, total + 1):
                t0 = time.monotonic()
                try:
                    response = client.get(target)
                    passed, reason = response.is_success, f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    passed, reason = False, f"{type(exc).__name__}: {exc}"
                _record(attempts, lines, n, total, f"GET {target}", passed, reason, t0)
                if passed or n == total:
                    break
                time.sleep(delay)
    else:
        assert command is not None
        release_id = current_release(session, dp)
        for n in range(1, total + 1):
            t0 = time.monotonic()
            result = session.run(
                command,
                env=ferry_env(session, dp, release_id, env),
                cwd=f"{dp}/current",
                timeout=timeout,
            )
            passed = result.ok
            reason = f"exit {result.exit_code}" + (f": {_last_line(result.output)}" if result.output else "")
            _record(attempts, lines, n, total, "command", passed, reason, t0)
            if passed or n == total:
                break
            time.sleep(delay)

    ok = attempts[-1]["passed"]
    if ok:
        lines.append(f"healthy after {len(attempts)} attempt(s)")
    else:
        lines.append(f"health check failed after {len(attempts)} attempt(s): {attempts[-1]['reason']}")
    detail = {"kind": "http" if url is not None else "command", "passed": ok, "attempts": attempts}
    return StepResult(0 if ok else 1, "\n".join(lines) + "\n", time.monotonic() - started, detail)


def _record(
    attempts: list[dict[str, Any]],
    lines: list[str],
    n: int,
    total: int,
    what: str,
    passed: bool,
    reason: str,
    t0: float,
) -> None:
    seconds = round(time.monotonic() - t0, 3)
    attempts.append({"attempt": n, "passed": passed, "reason": reason, "seconds": seconds})
    lines.append(f"attempt {n}/{total}: {what} -> {'ok' if passed else 'failed'} ({reason}, {seconds:.3f}s)")


def _last_line(output: str) -> str:
    stripped = output.strip().splitlines()
    return stripped[-1][:200] if stripped else ""
