"""What a chat message says about an event: the release it belongs to and a one-line summary."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.domain.events import (
    ArtifactPackaged,
    BuildFailed,
    BuildHookFinished,
    BuildStarted,
    Event,
    HostFailed,
    HostRolledBack,
    HostStepFinished,
    HostStepStarted,
    ReleaseApproved,
    ReleaseCancelled,
    ReleaseFailed,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseSucceeded,
    SourceFetched,
)
from ferry.domain.release import ReleaseState

REASON_LIMIT = 300


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    project: str
    environment: str
    ref: str
    status: str

    @classmethod
    def of(cls, state: ReleaseState) -> ReleaseInfo:
        """The release as ``evolve`` left it right after the event being sent."""
        return cls(state.release_id, state.project, state.environment, state.ref, state.status)

    def as_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "project": self.project,
            "environment": self.environment,
            "ref": self.ref,
            "status": self.status,
        }


def short(text: str, limit: int = REASON_LIMIT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _what(event: Event) -> str:
    match event:
        case ReleaseRequested(requested_by=who):
            return f"requested by {who}"
        case ReleaseApproved(by=who):
            return f"approved by {who}"
        case ReleaseRejected(by=who, reason=reason):
            return f"rejected by {who}" + (f": {short(reason)}" if reason else "")
        case BuildStarted():
            return "build started"
        case SourceFetched(commit=commit):
            return f"fetched commit {commit[:12]}"
        case BuildHookFinished(index=i, exit_code=code):
            return f"build hook #{i + 1} exited {code}"
        case ArtifactPackaged(size=size, reused=reused):
            return f"artifact {'reused' if reused else 'packaged'} ({_size(size)})"
        case BuildFailed(stage=stage, reason=reason):
            return f"build failed at {stage}: {short(reason)}"
        case HostStepStarted(host=host, step=step):
            return f"{host}: {step} started"
        case HostStepFinished(host=host, step=step, exit_code=code):
            return f"{host}: {step} {'done' if code == 0 else f'exited {code}'}"
        case HostFailed(host=host, step=step, reason=reason):
            return f"host {host} failed at {step}: {short(reason)}"
        case HostRolledBack(host=host, to_release=to):
            return f"host {host} rolled back" + (f" to {to}" if to else "")
        case ReleaseSucceeded():
            return "succeeded"
        case ReleaseFailed(reason=reason):
            return f"failed: {short(reason)}"
        case ReleaseCancelled(by=who, reason=reason):
            return f"cancelled by {who}" + (f": {short(reason)}" if reason else "")
        case _:
            return event.type


_ICONS = {"succeeded": "✅", "failed": "❌", "cancelled": "⏹", "rejected": "⛔"}


def release_link(public_url: str | None, release_id: str) -> str | None:
    """The portal page of a release, when the portal's public URL is known."""
    return f"{public_url.rstrip('/')}/releases/{release_id}" if public_url else None


def summary(event: Event, release: ReleaseInfo) -> str:
    """A one-line human summary: ``[ferry] shop → prod: release r1 (main) failed: …``."""
    icon = _ICONS.get(release.status, "") if event.TERMINAL or event.type.endswith(".failed") else ""
    prefix = f"{icon} " if icon else ""
    return (
        f"{prefix}[ferry] {release.project} → {release.environment}: "
        f"release {release.id} ({short(release.ref, 80)}) {_what(event)}"
    )
