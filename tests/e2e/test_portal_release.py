"""Issue 4 acceptance on the whole system: a real release to 3 sshd hosts drawn live in Chromium."""

from __future__ import annotations

import asyncio

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.portal_helpers import (
    flow_keys,
    node_statuses,
    open_release,
    save_diagram,
    wait_all_nodes,
    wait_live,
    wait_loaded,
    wait_nodes,
)
from tests.e2e.test_pipeline import register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd, pytest.mark.browser]
HOSTS = ["web1", "web2", "web3"]


async def test_release_draws_itself_live_survives_reload_and_shows_a_failed_health_check(
    system: System, sshd_hosts, tmp_path, page
):
    hosts = sshd_hosts(3)
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=free_port(), concurrency=1)
    # a pre-release hook that takes a moment, so the release is visibly in flight
    r = system.api.patch("/api/projects/web", json={"pre_release": "sleep 0.7"})
    assert r.status_code == 200, r.text
    sample.commit("A")

    rid = system.release("web", "prod", "main")
    await open_release(page, system.url, rid)
    await wait_live(page)
    # midway: the first host is done or running while the last is still waiting
    await wait_nodes(page, {"host:web1:upload": "succeeded"}, within=60)
    before = await node_statuses(page)
    assert before["host:web3:post_release"] == "waiting"
    await page.reload()
    await wait_loaded(page)
    after = await node_statuses(page)
    assert after["host:web1:upload"] == "succeeded"
    await wait_all_nodes(page, "succeeded", keys=flow_keys(HOSTS), within=90)
    await asyncio.to_thread(system.wait, rid)
    await save_diagram(page, "release-diagram-live.png")

    # web2 turns unhealthy: its health node goes red, the release fails
    (hosts[1].srv_path / "app" / "shared" / "FAIL_HEALTH").write_text("sick\n")
    sample.commit("B")
    rid2 = system.release("web", "prod", "main")
    await open_release(page, system.url, rid2)
    await wait_nodes(page, {"host:web2:health": "failed"}, within=90)
    done = await asyncio.to_thread(system.wait, rid2)
    assert done["status"] == "failed"
    await wait_nodes(page, {"host:web1:health": "succeeded", "host:web2:health": "failed"}, within=30)
    await save_diagram(page, "release-diagram-live-failed.png")

    # back on the first release's page, "Roll back to this" releases its commit again
    (hosts[1].srv_path / "app" / "shared" / "FAIL_HEALTH").unlink()
    await open_release(page, system.url, rid)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#btn-rollback")
    await page.wait_for_url(lambda url: "/releases/" in url and rid not in url, timeout=20_000)
    await wait_loaded(page)
    await wait_all_nodes(page, "succeeded", keys=flow_keys(HOSTS), within=90)
    again = page.url.rsplit("/", 1)[1]
    view = await asyncio.to_thread(system.wait, again)
    assert view["status"] == "succeeded" and view["artifact"]["reused"] is True
