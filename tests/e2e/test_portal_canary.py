"""A paused canary in the portal: the pause node and banner, then Resume from the page (Chromium)."""

from __future__ import annotations

import asyncio

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.portal_helpers import flow_keys, open_release, save_diagram, wait_all_nodes, wait_nodes
from tests.e2e.test_pipeline import fetch, register
from tests.e2e.test_rollout_strategies import set_strategy, wait_status
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd, pytest.mark.browser]
HOSTS = ["web1", "web2", "web3"]


async def test_paused_canary_is_drawn_and_resumed_from_the_page(system: System, sshd_hosts, tmp_path, page):
    hosts = sshd_hosts(3)
    port = free_port()
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=port, concurrency=3)
    set_strategy(system, strategy="canary", canary_size=1, canary_pause=None)
    sample.commit("A")
    rid = system.release("web", "prod", "main")
    await asyncio.to_thread(wait_status, system, rid, "paused")

    await open_release(page, system.url, rid)
    await wait_nodes(page, {"host:web1:post_release": "succeeded", "host:web2:upload": "waiting"})
    assert await page.is_visible("#pause-banner")
    assert await page.is_visible("#btn-resume")
    await save_diagram(page, "release-diagram-canary-paused.png")
    assert [fetch(h.address, port) for h in hosts[:1]] == ["A"]

    await page.click("#btn-resume")
    await wait_all_nodes(page, "succeeded", keys=[k for k in flow_keys(HOSTS) if k != "pause"], within=90)
    done = await asyncio.to_thread(system.wait, rid)
    assert done["status"] == "succeeded"
    resumed = [e for e in system.events(rid) if e["type"] == "release.resumed"]
    assert len(resumed) == 1 and resumed[0]["by"] != "timer"
    assert [fetch(h.address, port) for h in hosts] == ["A", "A", "A"]
