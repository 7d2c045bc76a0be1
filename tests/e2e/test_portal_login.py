"""Signing in to the portal with an API token, in real Chromium, against the whole system with auth on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.local.natsserver import NatsServer, free_port
from tests.e2e.portal_helpers import wait_live, wait_loaded
from tests.e2e.test_pipeline import register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System, start_system

pytestmark = [pytest.mark.sshd, pytest.mark.browser]


@pytest.fixture
def secured_system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    """The whole system with FERRY_AUTH=token; ``system.api`` carries the bootstrap admin token."""
    s = start_system(tmp_path / "home", nats_url=nats_server.url, agents=1, auth=True)
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


async def test_sign_in_release_from_the_form_and_watch_it_live(
    secured_system: System, sshd_hosts: Any, tmp_path: Path, page: Any
) -> None:
    system = secured_system
    base = system.url.rstrip("/")
    sample = make_sample_repo(tmp_path / "sample")
    sample.commit("A")
    register(system, sshd_hosts(1), sample.url, app_port=free_port())
    assert system.api.get("/api/projects", headers={"Authorization": ""}).status_code == 401
    created = system.post("/api/tokens", {"name": "release-manager", "role": "deployer"}, 201).json()
    token = created["token"]

    # Not signed in: every page sends the browser to /login, remembering where it was going.
    await page.goto(f"{base}/projects/web")
    assert page.url == f"{base}/login?next=/projects/web"
    await page.fill("#token", "fry_not-a-real-token-at-all")
    await page.click("#sign-in")
    assert "unknown or revoked" in await page.locator("#login-error").inner_text()

    await page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    await page.fill("#token", token)
    await page.click("#sign-in")
    await page.wait_for_url(f"{base}/")
    assert await page.locator("#account-name").inner_text() == "release-manager"
    assert await page.locator("a[href='/projects/web']").count() == 1
    cookies = await page.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "ferry_token"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert await page.evaluate("() => document.cookie") == ""  # scripts cannot read the token

    # The release form posts with the cookie (same origin: the CSRF check passes).
    await page.goto(f"{base}/projects/web/release")
    await page.wait_for_function(
        "() => document.getElementById('ref-status').textContent.includes('1 branch')", timeout=30_000
    )
    await page.get_by_role("button", name="Release").click()
    await page.wait_for_url("**/releases/r*")
    await wait_loaded(page)
    await wait_live(page)  # the notifier took the cookie too
    rid = page.url.rsplit("/", 1)[1]
    done = await asyncio.to_thread(system.wait, rid)
    assert done["status"] == "succeeded" and done["requested_by"] == "release-manager"
    assert system.events(rid)[0]["requested_by"] == "release-manager"

    # Signing out drops the cookie; the pages ask for a token again.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/login")
    await page.goto(f"{base}/releases/{rid}")
    assert page.url.startswith(f"{base}/login?next=/releases/")
