"""The release page in real Chromium: the GoJS diagram follows the release live over the WebSocket.

Real nats-server, the real gateway and notifier under uvicorn, a migrated SQLite database.
Nothing schedules work (``background=False``), so the test appends the events a builder and
agents would append, decided by the release aggregate, and reads the diagram's model through
the page.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

from ferry.db.engine import upgrade
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
    decide,
    evolve,
    replay,
)
from ferry.infra.bus import Bus, open_bus
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from services.gateway.app import create_app as create_gateway
from services.notifier.app import create_app as create_notifier
from services.notifier.bootstrap import server_config
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
from tests.harness.history import append_next
from tests.integration.api_harness import project_body, ssh_keypair

pytestmark = pytest.mark.browser

COMMIT = "3f2a9c1e" * 5
DIGEST = "ab" * 32


class ServerThread:
    """uvicorn serving an app in a thread until ``stop()``."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def start(self, within: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + within
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 15)


@dataclass
class Stack:
    url: str
    api: httpx.AsyncClient
    bus: Bus
    settings: Settings
    notifier: ServerThread

    async def restart_notifier(self) -> None:
        self.notifier = await ServerThread(
            server_config(self.settings, create_notifier(self.settings))
        ).start()

    async def seed(self, hosts: int, project: str = "shop", approval: bool = False) -> list[str]:
        private, public = ssh_keypair()
        await self.ok("/api/credentials", {"name": "key", "kind": "ssh_key", "secret": private}, 201)
        names = [f"web{i:02d}" if hosts > 9 else f"web{i}" for i in range(hosts)]
        for i, name in enumerate(names):
            body = {"name": name, "address": f"127.0.1.{i + 2}", "credential": "key", "host_key": public}
            await self.ok("/api/hosts", body, 201)
        await self.ok("/api/projects", project_body(project, build_hooks=["make build"]), 201)
        env = {"name": "prod", "hosts": names, "concurrency": 4, "require_approval": approval}
        await self.ok(f"/api/projects/{project}/environments", env, 201)
        return names

    async def ok(self, path: str, body: dict[str, Any], status: int) -> Any:
        r = await self.api.post(path, json=body)
        assert r.status_code == status, f"POST {path}: {r.status_code} {r.text}"
        return r.json()

    async def release(self, project: str = "shop", ref: str = "main") -> str:
        body = await self.ok(
            "/api/releases",
            {"project": project, "environment": "prod", "ref": ref, "requested_by": "dev"},
            202,
        )
        return str(body["id"])

    async def do(self, release_id: str, *commands: Any) -> int:
        """Append what the aggregate decides for each command; returns the last stream sequence."""
        history = await self.bus.events.load(release_id)
        state = replay(release_id, [s.event for s in history])
        seq = history[-1].seq
        for command in commands:
            events = decide(state, command, datetime.now(UTC))
            seq = await append_next(self.bus.events, events)
            for e in events:
                state = evolve(state, e)
        return seq

    async def store_log(self, text: str) -> str:
        return (await self.bus.artifacts.put_bytes(text.encode())).digest

    async def build(self, release_id: str) -> int:
        log = await self.store_log("$ make build\ncompiling 42 files\nbuild ok\n")
        return await self.do(
            release_id,
            StartBuild("builder-1"),
            RecordSource(COMMIT, 0.35),
            RecordHook(0, "make build", 0, 1.5, "compiling 42 files\nbuild ok\n"),
            RecordArtifact(DIGEST, 3_456_789, "zst", log_digest=log, duration=0.8),
        )


@pytest.fixture
async def stack(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Stack]:
    db_url = f"sqlite:///{tmp_path / 'ferry.db'}"
    await asyncio.to_thread(upgrade, db_url)
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=db_url,
        http_port=free_port(),
        ws_port=free_port(),
        secret_key=Fernet.generate_key().decode(),
    )
    gateway = ServerThread(
        uvicorn.Config(
            create_gateway(settings, background=False),
            host="127.0.0.1",
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    notifier = ServerThread(server_config(settings, create_notifier(settings)))
    await gateway.start()
    stack: Stack | None = None
    try:
        await notifier.start()
        bus = await open_bus(nats_server.url, name="e2e-driver")
        url = f"http://127.0.0.1:{settings.http_port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                stack = Stack(url, client, bus, settings, notifier)
                yield stack
        finally:
            await bus.close()
    finally:
        await (stack.notifier if stack else notifier).stop()
        await gateway.stop()


def step_nodes(host: str, step: str) -> str:
    return f"host:{host}:{step}"


async def pulsing(page: Any, key: str) -> bool:
    """Whether the node's outline changes colour over a second (the running pulse)."""
    seen = set()
    for _ in range(10):
        seen.add(
            await page.evaluate(
                "(k) => window.ferryDiagram.findPartForKey(k).findObject('SHAPE').stroke", key
            )
        )
        await asyncio.sleep(0.1)
    return len(seen) > 2


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


async def test_new_release_form_picks_a_ref_and_opens_the_release(stack: Stack, page: Any) -> None:
    await stack.seed(2)
    branches = [{"name": "develop", "commit": "1" * 40}, {"name": "main", "commit": COMMIT}]
    tags = [{"name": "v1.0.0", "commit": "2" * 40}]

    async def builder_refs(msg: Any) -> None:  # stands in for the builder's refs responder
        await msg.respond(json.dumps({"ok": True, "branches": branches, "tags": tags}).encode())

    sub = await stack.bus.nc.subscribe("ferry.builder.refs", cb=builder_refs)
    try:
        await page.goto(f"{stack.url}/projects/shop/release")
        await page.wait_for_function(
            "() => document.getElementById('ref-status').textContent.includes('2 branches')"
        )
        assert await page.locator("#ref-branch").input_value() == "main"
        await page.get_by_role("radio", name="Tag").check()
        assert await page.locator("#ref-tag").is_visible()
        assert await page.locator("#ref-tag option").all_inner_texts() == [f"v1.0.0 — {'2' * 10}"]
        await page.get_by_role("button", name="Release").click()
        await page.wait_for_url("**/releases/r*")
        await wait_loaded(page)
    finally:
        await sub.unsubscribe()
    rid = page.url.rsplit("/", 1)[1]
    release = (await stack.api.get(f"/api/releases/{rid}")).json()
    assert (release["project"], release["environment"], release["ref"]) == ("shop", "prod", "v1.0.0")
    assert await page.locator("#f-ref").inner_text() == "v1.0.0"
    assert await page.locator("#project-link").inner_text() == "shop"

    # Bad input comes back as a message naming the field, on the form.
    await page.goto(f"{stack.url}/projects/shop/release")
    await page.wait_for_function(
        "() => document.getElementById('ref-status').textContent !== 'Loading branches and tags…'"
    )
    await page.get_by_role("radio", name="Commit").check()
    await page.locator("#ref-commit").fill("--upload-pack=x")
    await page.get_by_role("button", name="Release").click()
    assert "hexadecimal" in await page.locator("#form-error").inner_text()


async def test_approval_from_the_release_page(stack: Stack, page: Any) -> None:
    await stack.seed(2, approval=True)
    rid = await stack.release()
    await open_release(page, stack.url, rid)
    await wait_nodes(page, {"start": "running", "build:fetch": "waiting"})
    assert await page.locator("#status-badge").inner_text() == "awaiting approval"
    assert await page.locator("#btn-reject").is_visible()
    await page.get_by_role("button", name="Approve").click()
    await wait_nodes(page, {"start": "succeeded"})
    assert await page.locator("#status-badge").inner_text() == "queued"
    assert not await page.locator("#btn-approve").is_visible()
    assert not await page.locator("#replay").is_visible(), "replay is for finished releases"
    events = (await stack.api.get(f"/api/releases/{rid}/events")).json()["events"]
    assert [e["event"]["type"] for e in events] == ["release.requested", "release.approved"]

    # Cancel asks for a reason; the release ends cancelled and every node says so.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("wrong branch")))
    await page.get_by_role("button", name="Cancel").click()
    await wait_nodes(page, {"end": "skipped", "build:fetch": "skipped"})
    assert await page.locator("#status-badge").inner_text() == "cancelled"
    assert "wrong branch" in await page.locator("#f-reason").inner_text()


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
