"""The release page in real Chromium: the GoJS diagram follows the release live over the WebSocket, and
rides out a notifier restart (the stack: portal_stack).
"""

# ruff: noqa: F401, F811  (the `stack` fixture is imported by name)

from __future__ import annotations

from typing import Any

import pytest

from ferry.domain.events import HOST_STEPS
from ferry.domain.release import (
    Fail,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
)
from tests.e2e.portal_helpers import (
    click_node,
    flow_keys,
    last_seq,
    link_statuses,
    live_state,
    node_statuses,
    open_release,
    output_dir,
    save_diagram,
    wait_all_nodes,
    wait_live,
    wait_loaded,
    wait_nodes,
)
from tests.e2e.portal_stack import COMMIT, DIGEST, Stack, pulsing, stack, step_nodes

pytestmark = pytest.mark.browser


async def test_release_turns_green_live_and_survives_a_reload(stack: Stack, page: Any) -> None:
    hosts = await stack.seed(3)
    rid = await stack.release(ref="main")
    await open_release(page, stack.url, rid)
    keys = flow_keys(hosts)
    assert sorted(await node_statuses(page)) == sorted(keys)
    await wait_nodes(page, {"start": "succeeded", "build:fetch": "waiting", "end": "waiting"})
    await page.wait_for_function("() => document.getElementById('release').dataset.live === 'live'")

    # The build: each event arrives over the WebSocket and moves the picture on.
    await stack.do(rid, StartBuild("builder-1"))
    await wait_nodes(page, {"build:fetch": "running"})
    await stack.do(rid, RecordSource(COMMIT, 0.35))
    await wait_nodes(page, {"build:fetch": "succeeded", "build:hooks": "running"})
    assert await page.locator("#f-commit").inner_text() == COMMIT[:12]
    log = await stack.store_log("$ make build\ncompiling 42 files\nbuild ok\n")
    await stack.do(rid, RecordHook(0, "make build", 0, 1.5, "compiling 42 files\nbuild ok\n"))
    await wait_nodes(page, {"build:hooks": "succeeded", "build:package": "running"})
    await stack.do(rid, RecordArtifact(DIGEST, 3_456_789, "zst", log_digest=log, duration=0.8))
    await wait_nodes(page, {"build:package": "succeeded"})
    assert "3.3 MiB" in await page.locator("#f-artifact").inner_text()

    health_log = await stack.store_log("GET http://127.0.0.1:8080/health\n" * 50 + "200 OK\n")
    for step in HOST_STEPS:
        if step == "restart":
            # Reload in the middle: the same picture, then it carries on live.
            before, seq = await node_statuses(page), await last_seq(page)
            await page.reload()
            await wait_loaded(page)
            assert await node_statuses(page) == before
            assert await last_seq(page) == seq
            await page.wait_for_function("() => document.getElementById('release').dataset.live === 'live'")
        await stack.do(rid, *(StartHostStep(h, step, "agent-1") for h in hosts))
        await wait_nodes(page, {step_nodes(h, step): "running" for h in hosts})
        if step == "restart":
            assert await pulsing(page, step_nodes(hosts[0], step)), "a running node is animated"
        detail = {"log_digest": health_log} if step == "health" else {}
        tail = "200 OK\n" if step == "health" else f"{step} done\n"
        seq = await stack.do(rid, *(FinishHostStep(h, step, 0, 0.25, tail, detail) for h in hosts))
        await wait_nodes(page, {step_nodes(h, step): "succeeded" for h in hosts})
        assert await last_seq(page) == seq
    seq = await stack.do(rid, Succeed())
    await wait_all_nodes(page, "succeeded")
    assert await last_seq(page) == seq
    assert set(await page.evaluate("() => window.ferryDiagram.model.linkDataArray.map(l => l.status)")) == {
        "succeeded"
    }
    assert await page.locator("#status-badge").inner_text() == "succeeded"
    assert await live_state(page) == "finished"

    # A node's log: tail, exit code and duration, and the full log on demand.
    await click_node(page, step_nodes(hosts[1], "health"))
    panel = page.locator("#panel")
    assert "web1 · health check" in await panel.locator("#panel-title").inner_text()
    facts = (await panel.locator("#panel-facts").inner_text()).lower()
    assert "exit code" in facts and "0.25s" in facts
    assert (await panel.locator("#panel-output").inner_text()).strip() == "200 OK"
    await panel.locator("#panel-full-log").click()
    await page.wait_for_function("() => document.getElementById('panel-full').textContent.includes('200 OK')")
    assert (await panel.locator("#panel-full").inner_text()).count("GET http://127.0.0.1:8080/health") == 50
    await click_node(page, "build:hooks")
    assert "$ make build" in await panel.locator("#panel-output").inner_text()
    await page.locator("#panel-close").click()

    path = await save_diagram(page, "release-diagram.png")
    assert path.stat().st_size > 10_000
    await page.screenshot(path=str(output_dir() / "release-page.png"), full_page=True)

    # Replay: the slider re-folds the history up to event N; play runs it to the end.
    slider = page.locator("#replay-slider")
    assert await page.locator("#replay").is_visible()
    total = int(await slider.get_attribute("max") or 0)
    assert total == len((await stack.api.get(f"/api/releases/{rid}/events")).json()["events"])
    await slider.fill("1")
    await wait_nodes(
        page, {"start": "succeeded", "build:fetch": "waiting", step_nodes(hosts[0], "upload"): "waiting"}
    )
    await slider.fill("3")
    await wait_nodes(page, {"build:fetch": "succeeded", "build:hooks": "running", "end": "waiting"})
    await slider.fill(str(total - 4))
    await wait_nodes(page, {step_nodes(hosts[0], "post_release"): "running", "end": "waiting"})
    await page.locator("#replay-play").click()
    await wait_all_nodes(page, "succeeded", within=20)
    await page.wait_for_function("() => window.ferryReplayAt === null")


async def test_failing_health_check_turns_the_health_node_red(stack: Stack, page: Any) -> None:
    hosts = await stack.seed(3)
    rid = await stack.release()
    await open_release(page, stack.url, rid)
    await page.wait_for_function("() => document.getElementById('release').dataset.live === 'live'")
    await stack.build(rid)
    bad = hosts[1]
    for step in HOST_STEPS[:5]:
        await stack.do(rid, *(StartHostStep(h, step) for h in hosts))
        await stack.do(rid, *(FinishHostStep(h, step, 0, 0.1) for h in hosts))
    await stack.do(rid, *(StartHostStep(h, "health") for h in hosts))
    await wait_nodes(page, {step_nodes(h, "health"): "running" for h in hosts})
    await stack.do(
        rid,
        FinishHostStep(bad, "health", 1, 3.2, "GET http://127.0.0.2:8080/health -> 503\n"),
        FailHost(bad, "health", "health check failed after 3 attempts"),
    )
    await wait_nodes(page, {step_nodes(bad, "health"): "failed", f"host:{bad}": "failed"})
    for h in (hosts[0], hosts[2]):
        await stack.do(rid, FinishHostStep(h, "health", 0, 0.2), StartHostStep(h, "post_release"))
        await stack.do(rid, FinishHostStep(h, "post_release", 0, 0.1))
    await stack.do(
        rid,
        RollBackHost(bad, None, "current -> previous release"),
        Fail(f"host {bad} failed its health check"),
    )
    await wait_nodes(
        page,
        {
            step_nodes(bad, "health"): "failed",
            step_nodes(bad, "activate"): "rolled_back",
            step_nodes(bad, "post_release"): "skipped",
            f"host:{bad}": "rolled_back",
            "end": "failed",
        },
    )
    await wait_all_nodes(
        page, "succeeded", keys=[k for h in (hosts[0], hosts[2]) for k in flow_keys([h])[4:-1]]
    )
    assert await page.locator("#status-badge").inner_text() == "failed"
    links = await link_statuses(page)
    assert links[f"host:{bad}->end"] == "rolled_back" and links[f"host:{hosts[0]}->end"] == "succeeded"
    assert "health check" in await page.locator("#f-reason").inner_text()
    await click_node(page, step_nodes(bad, "health"))
    assert "503" in await page.locator("#panel-output").inner_text()
    facts = (await page.locator("#panel-facts").inner_text()).lower()
    assert "exit code\n1" in facts and "3.20s" in facts
    await page.locator("#panel-close").click()
    await save_diagram(page, "release-diagram-failed-health.png")

    # Reloaded, the finished release draws the same.
    before = await node_statuses(page)
    await page.reload()
    await wait_loaded(page)
    assert await node_statuses(page) == before


async def test_twenty_hosts_render_every_lane_readably(stack: Stack, page: Any) -> None:
    hosts = await stack.seed(20)
    rid = await stack.release()
    await open_release(page, stack.url, rid)
    await page.wait_for_function("() => document.getElementById('release').dataset.live === 'live'")
    await stack.build(rid)
    for step in HOST_STEPS:
        await stack.do(rid, *(StartHostStep(h, step) for h in hosts))
        await stack.do(rid, *(FinishHostStep(h, step, 0, 0.1 + i / 100) for i, h in enumerate(hosts)))
    await stack.do(rid, Succeed())
    await wait_all_nodes(page, "succeeded", within=60)
    assert sorted(await node_statuses(page)) == sorted(flow_keys(hosts))

    # Every lane is drawn, none overlaps another, and the text stays at a readable scale.
    lanes = await page.evaluate(
        """() => { const d = window.ferryDiagram; const out = [];
            d.nodes.each(n => { if (n instanceof go.Group) { const b = n.actualBounds;
              out.push({key: n.key, x: b.x, y: b.y, w: b.width, h: b.height, visible: n.isVisible()}); } });
            return {lanes: out, scale: d.scale}; }"""
    )
    boxes = lanes["lanes"]
    assert len(boxes) == 20 and all(b["visible"] for b in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"] or a["x"] + a["w"] <= b["x"]
            assert apart or b["x"] + b["w"] <= a["x"], (a, b)
    assert lanes["scale"] >= 0.6
    box = await page.locator("#diagram").bounding_box()
    assert box is not None and box["height"] >= 20 * 56 * lanes["scale"]
    await save_diagram(page, "release-diagram-20-hosts.png")


async def test_page_rides_out_a_notifier_restart(stack: Stack, page: Any) -> None:
    hosts = await stack.seed(1)
    rid = await stack.release()
    await open_release(page, stack.url, rid)
    await wait_live(page)
    await stack.notifier.stop()
    await page.wait_for_function("() => document.getElementById('release').dataset.live === 'reconnecting'")
    # While the notifier is away, the reconnect attempts take what was missed from the API.
    seq = await stack.build(rid)
    await wait_nodes(page, {"build:package": "succeeded"}, within=20)
    assert await last_seq(page) == seq
    await stack.restart_notifier()
    await wait_live(page, within=20)
    await stack.do(rid, StartHostStep(hosts[0], "upload"))
    await wait_nodes(page, {step_nodes(hosts[0], "upload"): "running"})
