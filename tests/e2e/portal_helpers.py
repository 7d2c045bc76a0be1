"""Reading the release page in a real browser: the diagram's model, not its pixels.

Reusable by any e2e test that has a Playwright ``Page`` (async API) and the gateway's base URL:

    await open_release(page, base_url, release_id)
    await wait_all_nodes(page, "succeeded")
    await save_diagram(page, "release-diagram.png")

The async API, not the sync one: the sync API runs on greenlets, which on CPython 3.11
corrupt the recursion counter ``ast.parse`` checks ("AST constructor recursion depth
mismatch"), breaking pytest's assertion rewriting and failure reports later in the session.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
HOST_STEPS = ("upload", "link", "pre_release", "activate", "restart", "health", "post_release")


def chromium_unavailable_reason() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Any]:
    """Debian's chromium driven by Playwright (never ``playwright install``)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def output_dir() -> Path:
    """Where tests put what a person may want to look at (``FERRY_TEST_OUTPUT``, default test-output/)."""
    path = Path(os.environ.get("FERRY_TEST_OUTPUT") or "test-output")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def open_release(page: Any, base_url: str, release_id: str, within: float = 20.0) -> None:
    """Go to the release page and wait until its history is loaded and drawn."""
    await page.goto(f"{base_url.rstrip('/')}/releases/{release_id}")
    await wait_loaded(page, within)


async def wait_loaded(page: Any, within: float = 20.0) -> None:
    await page.wait_for_function(
        "() => window.ferryDiagram && document.getElementById('release').dataset.loaded === 'true'"
        " && window.ferryDiagram.model.nodeDataArray.length > 0",
        timeout=within * 1000,
    )


async def node_statuses(page: Any) -> dict[str, str]:
    """Every node's (and lane's) status, by key: ``build:fetch``, ``host:web1:health``, ``host:web1``…"""
    result: dict[str, str] = await page.evaluate(
        "() => Object.fromEntries(window.ferryDiagram.model.nodeDataArray.map(d => [d.key, d.status]))"
    )
    return result


async def link_statuses(page: Any) -> dict[str, str]:
    result: dict[str, str] = await page.evaluate(
        "() => Object.fromEntries(window.ferryDiagram.model.linkDataArray.map(d => [d.key, d.status]))"
    )
    return result


async def last_seq(page: Any) -> int:
    return int(await page.evaluate("() => window.ferryLastSeq"))


async def live_state(page: Any) -> str:
    """``live`` while the WebSocket is open; ``finished``, ``reconnecting``… otherwise."""
    return str(await page.evaluate("() => document.getElementById('release').dataset.live || ''"))


async def wait_live(page: Any, within: float = 20.0) -> None:
    """Wait until the page's WebSocket to the notifier is open."""
    await page.wait_for_function(
        "() => document.getElementById('release').dataset.live === 'live'", timeout=within * 1000
    )


async def wait_nodes(page: Any, expected: dict[str, str], within: float = 30.0) -> None:
    """Wait until each node in ``expected`` has its status (reports what differs on timeout)."""
    predicate = (
        "(exp) => { if (!window.ferryDiagram) return false;"
        " const m = window.ferryDiagram.model;"
        " return Object.entries(exp).every(([k, s]) => {"
        "   const d = m.findNodeDataForKey(k); return d && d.status === s; }); }"
    )
    try:
        await page.wait_for_function(predicate, arg=expected, timeout=within * 1000)
    except Exception as exc:
        seen = await node_statuses(page)
        diff = {k: (s, seen.get(k)) for k, s in expected.items() if seen.get(k) != s}
        raise AssertionError(f"nodes not as expected after {within}s (want, seen): {diff}") from exc


async def wait_all_nodes(
    page: Any, status: str, *, keys: Iterable[str] | None = None, within: float = 30.0
) -> None:
    """Wait until every node (or every one of ``keys``) has ``status``."""
    wanted = list(keys) if keys is not None else None
    predicate = (
        "([status, keys]) => { if (!window.ferryDiagram) return false;"
        " const m = window.ferryDiagram.model;"
        " const data = keys ? keys.map(k => m.findNodeDataForKey(k)) : m.nodeDataArray;"
        " return data.length > 0 && data.every(d => d && d.status === status); }"
    )
    try:
        await page.wait_for_function(predicate, arg=[status, wanted], timeout=within * 1000)
    except Exception as exc:
        seen = await node_statuses(page)
        off = {k: s for k, s in seen.items() if s != status and (wanted is None or k in wanted)}
        raise AssertionError(f"not every node is {status} after {within}s: {json.dumps(off)}") from exc


def host_keys(host: str) -> list[str]:
    return [f"host:{host}", *(f"host:{host}:{step}" for step in HOST_STEPS)]


def flow_keys(hosts: Iterable[str]) -> list[str]:
    """Every node key of a release to ``hosts``, in drawing order."""
    keys = ["start", "build:fetch", "build:hooks", "build:package"]
    for h in hosts:
        keys += host_keys(h)
    return [*keys, "end"]


async def click_node(page: Any, key: str) -> None:
    """Click a node where GoJS draws it (through the canvas, like a person)."""
    point = await page.evaluate(
        """(key) => {
            const d = window.ferryDiagram;
            const part = d.findPartForKey(key);
            d.scrollToRect(part.actualBounds);
            const b = part.actualBounds;
            // a lane is clicked on its title, left of its steps
            const x = part instanceof go.Group ? b.x + 40 : b.x + b.width / 2;
            const p = d.transformDocToView(new go.Point(x, b.y + b.height / 2));
            const r = d.div.getBoundingClientRect();
            return {x: r.left + p.x, y: r.top + p.y};
        }""",
        key,
    )
    await page.mouse.click(point["x"], point["y"])
    await page.wait_for_function("(k) => document.getElementById('panel').dataset.key === k", arg=key)


async def save_diagram(page: Any, name: str) -> Path:
    """A PNG of the diagram element (the whole flow: the element grows with the lanes)."""
    path = output_dir() / name
    await page.locator("#diagram").screenshot(path=str(path))
    return path
