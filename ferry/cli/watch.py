"""Watch a release live in a terminal: its state from the gateway, then its events from the notifier.

``ReleaseView`` is the display's state: the release's history (``GET /api/releases/{id}/events``)
and then its live events folded by ``evolve``, shown through ``ferry.domain.views`` (the view the
API shows too) as a rich table; an event this ferry does not know ends the watch loudly (exit 2).
``watch_release`` connects, reconnects with ``since`` when the socket drops, and returns the exit
code of the release's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from ferry.domain.events import HOST_STEPS, Event, UnknownEvent, decode
from ferry.domain.release import ReleaseState, UnknownEventType, evolve
from ferry.domain.views import ReleaseView as View
from ferry.domain.views import release_view
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
class ReleaseView:
    """What the display shows: the release's state as ``evolve`` folds it, through the view the
    API shows too (``ferry.domain.views.release_view``), and the last stream sequence applied."""

    release_id: str
    last_seq: int = 0
    state: ReleaseState = field(init=False)

    def __post_init__(self) -> None:
        self.state = ReleaseState(self.release_id)

    @classmethod
    def from_events(cls, release_id: str, items: list[dict[str, Any]]) -> ReleaseView:
        """The view of ``GET /api/releases/{id}/events`` (``{"seq", "event"}`` items, in order)."""
        view = cls(release_id)
        for item in items:
            view.apply(int(item["seq"]), _decode(int(item["seq"]), item["event"]))
        return view

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def reason(self) -> str | None:
        return self.state.reason

    @property
    def view(self) -> View:
        return release_view(self.state)

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def apply(self, seq: int, event: Event) -> None:
        """Advance by one event (events at or before ``last_seq`` are ignored); an event type
        ``evolve`` does not know raises ``UnknownEventType``."""
        if seq <= self.last_seq:
            return
        self.state = evolve(self.state, event)
        self.last_seq = seq

    def status_text(self) -> str:
        """The status, with when a paused canary goes on (or how to resume it)."""
        if self.status != "paused":
            return self.status
        resume_at = self.state.resume_at
        if resume_at is None:
            return f"paused (ferry release resume {self.release_id})"
        return f"paused (resume at {resume_at.astimezone().strftime('%H:%M:%S')})"

    def render(self) -> Group:
        view = self.view
        title = Text.assemble(
            (f"release {self.release_id}", "bold"),
            f"  {view.project}/{view.environment}  {view.ref}",
            f" @ {view.commit[:10]}" if view.commit else "",
            "  ",
            (self.status_text(), COLOURS.get(view.status, "")),
            f"  ({view.reason})" if view.reason else "",
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("stage")
        table.add_column("status")
        table.add_column("step")
        table.add_column("progress")
        build = view.build
        table.add_row("build", Text(build.status, COLOURS.get(build.status, "")), build.stage, "")
        steps = len(HOST_STEPS)
        for h in view.hosts:
            bar = Text("■" * h.done, "green") + Text("□" * (steps - h.done), "grey50")
            step = h.current
            table.add_row(
                h.name,
                Text(h.status, COLOURS.get(h.status, "")),
                Text(step.step, COLOURS.get(step.status, "")) if step else "",
                bar + f" {h.done}/{steps}",
            )
        return Group(title, table)


def _decode(seq: int, payload: Any) -> Event:
    try:
        return decode(payload)
    except UnknownEvent as exc:
        raise WatchError(
            f"event #{seq} is one this ferry does not know ({exc}): upgrade the ferry CLI"
        ) from exc


def describe(seq: int, event: Event) -> str:
    """One plain line per event, for logs and terminals without a live display."""
    parts = [f"#{seq}", event.type]
    for name in ("host", "step", "exit_code", "commit", "index", "reason", "by", "resume_at"):
        value = getattr(event, name, None)
        if value is not None and value != "":
            parts.append(f"{name}={value}")
    return " ".join(str(p) for p in parts)


async def load_release(client: httpx.AsyncClient, api_url: str, release_id: str) -> ReleaseView:
    """The release folded from its history (``GET /api/releases/{id}/events``)."""
    url = f"{api_url.rstrip('/')}/api/releases/{quote(release_id, safe='')}/events"
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise WatchError(f"cannot reach the gateway at {api_url}: {exc}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("error", {}).get("message") or response.text
        except ValueError:
            detail = response.text
        raise WatchError(f"gateway answered {response.status_code}: {detail}".strip())
    try:
        return ReleaseView.from_events(release_id, list(response.json()["events"]))
    except UnknownEventType as exc:
        raise WatchError(f"{exc}: upgrade the ferry CLI") from exc


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
                            event = _decode(seq, frame["event"])  # a newer ferry's event: WatchError
                            try:
                                view.apply(seq, event)
                            except UnknownEventType as exc:
                                raise WatchError(f"{exc}: upgrade the ferry CLI") from exc
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
