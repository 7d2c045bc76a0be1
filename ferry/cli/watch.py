"""Watch a release live in a terminal: its state from the gateway, then its events from the notifier.

``ReleaseView`` is the display's state (seeded from ``GET /api/releases/{id}``, advanced by
events) and renders as a rich table; ``watch_release`` connects, reconnects with ``since``
when the socket drops, and returns the exit code of the release's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from ferry.domain.events import (
    HOST_STEPS,
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
    ReleaseCancelRequested,
    ReleaseFailed,
    ReleasePaused,
    ReleaseRejected,
    ReleaseRequested,
    ReleaseResumed,
    ReleaseSucceeded,
    SourceFetched,
    UnknownEvent,
    decode,
)
from ferry.infra.settings import Settings

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TERMINAL = {
    "succeeded": EXIT_SUCCEEDED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_FAILED,
    "rejected": EXIT_FAILED,
}
COLOURS = {
    "waiting": "grey50",
    "queued": "grey50",
    "awaiting_approval": "yellow",
    "running": "blue",
    "building": "blue",
    "deploying": "blue",
    "paused": "yellow",
    "cancelling": "dark_orange",
    "succeeded": "green",
    "failed": "red",
    "rolled_back": "dark_orange",
    "cancelled": "dark_orange",
    "rejected": "red",
}


class WatchError(Exception):
    """The release cannot be watched (unknown release, gateway or notifier unreachable)."""


@dataclass
class HostView:
    status: str = "waiting"
    step: str | None = None
    step_status: str = "waiting"
    done: int = 0


@dataclass
class ReleaseView:
    release_id: str
    status: str = "new"
    project: str = ""
    environment: str = ""
    ref: str = ""
    commit: str | None = None
    build_status: str = "waiting"
    build_stage: str = ""
    reason: str | None = None
    last_seq: int = 0
    hosts: dict[str, HostView] = field(default_factory=dict)
    resume_at: datetime | None = None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> ReleaseView:
        """The view of a ``GET /api/releases/{id}`` response."""
        build = body.get("build") or {}
        view = cls(
            release_id=str(body["id"]),
            status=str(body.get("status", "new")),
            project=str(body.get("project", "")),
            environment=str(body.get("environment", "")),
            ref=str(body.get("ref", "")),
            commit=body.get("commit"),
            build_status=str(build.get("status", "waiting")),
            reason=body.get("reason"),
            last_seq=int(body.get("last_seq", 0)),
        )
        pause = body.get("pause") or {}
        if pause.get("resume_at"):
            view.resume_at = datetime.fromisoformat(str(pause["resume_at"]).replace("Z", "+00:00"))
        hooks = build.get("hooks") or []
        view.build_stage = {"succeeded": "packaged", "failed": "failed"}.get(view.build_status, "")
        if not view.build_stage and hooks:
            view.build_stage = f"hook {len(hooks)} done"
        for host in body.get("hosts") or []:
            hv = HostView(status=str(host.get("status", "waiting")))
            for step in host.get("steps") or []:
                if step.get("status") == "succeeded":
                    hv.done += 1
                if step.get("status") != "waiting":
                    hv.step, hv.step_status = str(step["step"]), str(step["status"])
            view.hosts[str(host["name"])] = hv
        return view

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def apply(self, seq: int, event: Event) -> None:
        """Advance the view by one event (events at or before ``last_seq`` are ignored)."""
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        match event:
            case ReleaseRequested():
                self.project, self.environment, self.ref = event.project, event.environment, event.ref
                self.status = "awaiting_approval" if event.plan.require_approval else "queued"
                self.hosts = {h: HostView() for h in event.plan.hosts}
            case ReleaseApproved():
                self.status = "queued"
            case BuildStarted():
                self.status, self.build_status, self.build_stage = "building", "running", "fetching"
            case SourceFetched():
                self.commit, self.build_stage = event.commit, "build hooks"
            case BuildHookFinished():
                self.build_stage = f"hook {event.index + 1} exit {event.exit_code}"
            case ArtifactPackaged():
                self.status, self.build_status, self.build_stage = "deploying", "succeeded", "packaged"
            case BuildFailed():
                self.build_status, self.build_stage = "failed", f"{event.stage} failed"
            case HostStepStarted():
                h = self.hosts.setdefault(event.host, HostView())
                h.status, h.step, h.step_status = "running", event.step, "running"
            case HostStepFinished():
                h = self.hosts.setdefault(event.host, HostView())
                ok = event.exit_code == 0
                h.step, h.step_status = event.step, "succeeded" if ok else "failed"
                h.done += ok
                if ok and event.step == HOST_STEPS[-1]:
                    h.status = "succeeded"
            case HostFailed():
                h = self.hosts.setdefault(event.host, HostView())
                h.status, h.step, h.step_status = "failed", event.step, "failed"
            case HostRolledBack():
                self.hosts.setdefault(event.host, HostView()).status = "rolled_back"
            case ReleasePaused():
                self.status, self.resume_at = "paused", event.resume_at
            case ReleaseResumed():
                self.status, self.resume_at = "deploying", None
            case ReleaseCancelRequested():
                self.status = "cancelling"
            case ReleaseSucceeded():
                self.status = "succeeded"
            case ReleaseFailed():
                self.status, self.reason = "failed", event.reason
            case ReleaseCancelled():
                self.status, self.reason = "cancelled", event.reason or "cancelled"
            case ReleaseRejected():
                self.status, self.reason = "rejected", event.reason or "rejected"

    def status_text(self) -> str:
        """The status, with when a paused canary goes on (or how to resume it)."""
        if self.status != "paused":
            return self.status
        if self.resume_at is None:
            return f"paused (ferry release resume {self.release_id})"
        return f"paused (resume at {self.resume_at.astimezone().strftime('%H:%M:%S')})"

    def render(self) -> Group:
        title = Text.assemble(
            (f"release {self.release_id}", "bold"),
            f"  {self.project}/{self.environment}  {self.ref}",
            f" @ {self.commit[:10]}" if self.commit else "",
            "  ",
            (self.status_text(), COLOURS.get(self.status, "")),
            f"  ({self.reason})" if self.reason else "",
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("stage")
        table.add_column("status")
        table.add_column("step")
        table.add_column("progress")
        table.add_row(
            "build",
            Text(self.build_status, COLOURS.get(self.build_status, "")),
            self.build_stage,
            "",
        )
        steps = len(HOST_STEPS)
        for name, h in self.hosts.items():
            bar = Text("■" * h.done, "green") + Text("□" * (steps - h.done), "grey50")
            table.add_row(
                name,
                Text(h.status, COLOURS.get(h.status, "")),
                Text(h.step or "", COLOURS.get(h.step_status, "")),
                bar + f" {h.done}/{steps}",
            )
        return Group(title, table)


def describe(seq: int, event: Event) -> str:
    """One plain line per event, for logs and terminals without a live display."""
    parts = [f"#{seq}", event.type]
    for name in ("host", "step", "exit_code", "commit", "index", "reason", "by", "resume_at"):
        value = getattr(event, name, None)
        if value is not None and value != "":
            parts.append(f"{name}={value}")
    return " ".join(str(p) for p in parts)


async def load_release(client: httpx.AsyncClient, api_url: str, release_id: str) -> ReleaseView:
    try:
        response = await client.get(f"{api_url.rstrip('/')}/api/releases/{quote(release_id, safe='')}")
    except httpx.HTTPError as exc:
        raise WatchError(f"cannot reach the gateway at {api_url}: {exc}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("error", {}).get("message") or response.text
        except ValueError:
            detail = response.text
        raise WatchError(f"gateway answered {response.status_code}: {detail}".strip())
    return ReleaseView.from_api(response.json())


async def follow(
    view: ReleaseView,
    ws_url: str,
    on_event: Callable[[int, Event], None],
    *,
    token: str | None = None,
    attempts: int = 5,
    backoff: float = 0.5,
) -> None:
    """Apply the release's events from ``view.last_seq`` until it ends; reconnect with ``since``.

    ``attempts`` bounds consecutive failed connections; any frame received resets the count.
    """
    failures = 0
    while not view.terminal:
        url = f"{ws_url.rstrip('/')}/ws/releases/{quote(view.release_id, safe='')}?since={view.last_seq}"
        if token:
            url += f"&token={quote(token, safe='')}"
        try:
            async with websockets.connect(url, open_timeout=10, max_size=None) as ws:
                async for raw in ws:
                    failures = 0
                    frame = json.loads(raw)
                    if frame.get("kind") == "event":
                        seq = int(frame["seq"])
                        if seq > view.last_seq:
                            try:
                                event = decode(frame["event"])
                            except UnknownEvent:
                                view.last_seq = seq  # from a newer ferry: skip it
                                continue
                            view.apply(seq, event)
                            on_event(seq, event)
                        if view.terminal:
                            return
                    elif frame.get("kind") == "resync":
                        break  # fell behind: reconnect at once from what we applied
                else:
                    raise ConnectionClosedOK(None, None)  # closed without an end: count it, retry
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4401:
                raise WatchError("the notifier refused the token (FERRY_TOKEN or FERRY_WS_TOKEN)") from exc
            failures += 1
            if failures >= attempts:
                raise WatchError(f"lost the notifier at {ws_url} after {attempts} attempts") from exc
            await asyncio.sleep(backoff * failures)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            failures += 1
            if failures >= attempts:
                raise WatchError(
                    f"cannot reach the notifier at {ws_url} after {attempts} attempts: {exc}"
                ) from exc
            await asyncio.sleep(backoff * failures)
        except InvalidURI as exc:
            raise WatchError(f"invalid notifier URL {ws_url!r}") from exc


async def watch_release(
    release_id: str,
    *,
    api_url: str,
    ws_url: str,
    console: Console,
    live: bool | None = None,
    token: str | None = None,
    attempts: int = 5,
    backoff: float = 0.5,
    api_token: str | None = None,
) -> int:
    """Show the release until it ends; 0 succeeded, 1 failed/cancelled/rejected, 2 cannot watch.

    ``api_token`` (default ``FERRY_TOKEN``) authenticates to the gateway and, unless ``token``
    (``FERRY_WS_TOKEN``) is given, to the notifier too.
    """
    live = console.is_terminal if live is None else live
    api_token = api_token or Settings.from_env().token
    token = token or api_token
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    try:
        async with httpx.AsyncClient(timeout=10, headers=headers) as client:
            view = await load_release(client, api_url, release_id)
        if live:
            with Live(view.render(), console=console, refresh_per_second=8, transient=False) as display:
                await follow(
                    view,
                    ws_url,
                    lambda seq, event: display.update(view.render()),
                    token=token,
                    attempts=attempts,
                    backoff=backoff,
                )
        else:
            console.print(f"release {view.release_id}: {view.status} (from #{view.last_seq})")

            def line(seq: int, event: Event) -> None:
                console.print(describe(seq, event), highlight=False, markup=False)

            await follow(view, ws_url, line, token=token, attempts=attempts, backoff=backoff)
    except WatchError as exc:
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        return EXIT_USAGE
    console.print(
        f"release {view.release_id} {view.status}" + (f": {view.reason}" if view.reason else ""),
        style=COLOURS.get(view.status, ""),
        highlight=False,
        markup=False,
    )
    return TERMINAL.get(view.status, EXIT_USAGE)
