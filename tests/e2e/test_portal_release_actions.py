"""The portal's release actions in real Chromium: the new-release form (pick a ref, open the release) and
approve/cancel from the release page (the stack: portal_stack).
"""

# ruff: noqa: F401, F811  (the `stack` fixture is imported by name)

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.portal_helpers import open_release, wait_loaded, wait_nodes
from tests.e2e.portal_stack import COMMIT, Stack, stack

pytestmark = pytest.mark.browser


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
