"""The portal's pages and static files against the real gateway app, nats-server and database."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from ferry.domain.events import HOST_STEPS
from ferry.domain.release import (
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    ReleaseState,
    StartBuild,
    StartHostStep,
    decide,
    evolve,
    replay,
)
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer
from services.gateway import portal
from services.gateway.app import create_app
from tests.harness.history import append_next
from tests.integration.api_harness import Api, project_body, ssh_keypair

ROOT = Path(__file__).resolve().parents[2]
LICENSE = "ferry-test-license-<key>&\"'"


@pytest.fixture(scope="session")
def gojs_installed() -> Path:
    """node_modules/gojs at the repository root, installed with npm when absent."""
    if portal.gojs_path() is None:
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed, and node_modules/gojs is absent")
        subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=ROOT, check=True, timeout=300)
    path = portal.gojs_path()
    assert path is not None, "npm install did not provide node_modules/gojs/release/go.js"
    return path


@pytest.fixture
async def site(tmp_path: Path, nats_server: NatsServer, migrated_db: str) -> AsyncIterator[Api]:
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=migrated_db,
        secret_key=Fernet.generate_key().decode(),
        ws_port=18765,
        gojs_license_key=LICENSE,
    )
    app = create_app(settings, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield Api(client, app)


async def seed(api: Api, hosts: int = 3, project: str = "shop") -> list[str]:
    private, public = ssh_keypair()
    await api.ok("POST", "/api/credentials", {"name": "key", "kind": "ssh_key", "secret": private}, 201)
    names = []
    for i in range(hosts):
        name = f"web{i}"
        body = {"name": name, "address": f"127.0.0.{i + 2}", "credential": "key", "host_key": public}
        await api.ok("POST", "/api/hosts", body, 201)
        names.append(name)
    await api.ok("POST", "/api/projects", project_body(project, build_hooks=["make build"]), 201)
    await api.ok("POST", f"/api/projects/{project}/environments", {"name": "prod", "hosts": names}, 201)
    return names


async def release(api: Api, project: str = "shop", ref: str = "main") -> str:
    body = await api.ok("POST", "/api/releases", {"project": project, "environment": "prod", "ref": ref}, 202)
    return str(body["id"])


async def drive(api: Api, release_id: str, commands: list[object]) -> None:
    """Append what the aggregate decides for each command, as the builder and agents would."""
    store = api.gw.bus.events
    history = await store.load(release_id)
    state = replay(release_id, [s.event for s in history])
    now = datetime.now(UTC)
    for i, command in enumerate(commands):
        events = decide(state, command, now + timedelta(milliseconds=i))  # type: ignore[arg-type]
        await append_next(store, events)
        for e in events:
            state = evolve(state, e)


def html_of(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("text/html"), r.headers
    return r.text


# --- pages ------------------------------------------------------------------------
async def test_projects_page_lists_projects(site: Api) -> None:
    empty = await site.get("/")
    assert empty.status_code == 200
    assert "No projects yet" in html_of(empty)
    await seed(site)
    page = html_of(await site.get("/"))
    assert '<a href="/projects/shop">shop</a>' in page
    assert "https://git.example.com/team/app.git" in page
    assert 'href="/projects/shop/release"' in page


async def test_project_page_shows_environments_hosts_and_history(site: Api) -> None:
    await seed(site)
    rid = await release(site, ref="v1.2.3")
    await drive(site, rid, [StartBuild("b"), RecordSource("c0ffee" * 6 + "beef")])
    await site.gw.projector.rebuild(site.gw.bus)
    page = html_of(await site.get("/projects/shop"))
    env = page.split('id="environments"')[1].split("</table>")[0]
    assert "prod" in env and "web0 web1 web2" in env
    hosts = page.split('id="hosts"')[1].split("</table>")[0]
    assert "127.0.0.2:22" in hosts and "web2" in hosts
    history = page.split('id="releases"')[1].split("</table>")[0]
    assert f'href="/releases/{rid}"' in history
    assert "v1.2.3" in history and "c0ffeec0ff" in history
    assert "status-building" in history
    assert "anonymous" in history or "<td>" in history  # requested_by rendered


async def test_release_form_page(site: Api) -> None:
    await seed(site)
    page = html_of(await site.get("/projects/shop/release"))
    assert 'data-project="shop"' in page
    assert '<option value="prod">prod (3 hosts)</option>' in page
    assert 'src="/static/release_form.js"' in page
    for kind in ("branch", "tag", "commit"):
        assert f'value="{kind}"' in page


async def test_release_page_renders_id_ws_base_and_license_key(site: Api, gojs_installed: Path) -> None:
    await seed(site)
    rid = await release(site)
    r = await site.get(f"/releases/{rid}")
    page = html_of(r)
    assert r.status_code == 200
    assert f'data-release-id="{rid}"' in page
    assert 'data-ws-base="ws://localhost:18765"' in page
    assert '<script src="/static/vendor/go.js"></script>' in page
    assert 'src="/static/release_page.js"' in page
    # The key is rendered (escaped) for go.Diagram.licenseKey.
    assert 'content="ferry-test-license-&lt;key&gt;&amp;&#34;&#39;"' in page  # escaped by Jinja2's autoescape
    assert "gojs-missing" not in page


async def test_unknown_pages_are_404_pages(site: Api) -> None:
    for path in ("/projects/nope", "/projects/nope/release", "/releases/r-unknown", "/releases/bad.id!"):
        r = await site.get(path)
        assert r.status_code == 404, path
        assert "Not found" in html_of(r)


async def test_static_modules_are_served(site: Api) -> None:
    for name in (
        "release_state.js",
        "release_graph.js",
        "release_diagram.js",
        "release_panel.js",
        "release_page.js",
        "release_form.js",
        "portal.css",
    ):
        r = await site.get(f"/static/{name}")
        assert r.status_code == 200, name
    js = await site.get("/static/release_state.js")
    assert "javascript" in js.headers["content-type"]
    assert (await site.get("/static/nope.js")).status_code == 404


async def test_gojs_is_served_unmodified_from_node_modules(site: Api, gojs_installed: Path) -> None:
    r = await site.get("/static/vendor/go.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert r.content == await asyncio.to_thread(gojs_installed.read_bytes)
    assert b"DO NOT MODIFY THIS FILE" in r.content[:1000]


async def test_missing_gojs_explains_npm_install(site: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed(site)
    rid = await release(site)
    monkeypatch.setattr(portal, "gojs_path", lambda: None)
    js = await site.get("/static/vendor/go.js")
    assert js.status_code == 503 and "npm install" in js.text
    page = await site.get(f"/releases/{rid}")
    assert page.status_code == 200
    assert "npm install" in page.text and 'id="gojs-missing"' in page.text
    assert "/static/vendor/go.js" not in page.text


def test_gojs_is_not_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [p for p in tracked.splitlines() if p.endswith("go.js") or "node_modules/" in p]
    package = json.loads((ROOT / "package.json").read_text())
    assert re.match(r"^\^?[34]\.", package["dependencies"]["gojs"])


# --- the page's reducer mirrors the aggregate ---------------------------------------
def test_js_reducer_mirrors_release_evolve(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    from ferry.domain.events import Plan, Recipe
    from ferry.domain.release import Fail, RequestRelease, RollBackHost

    rid = "r-mirror"
    plan = Plan(
        recipe=Recipe(repo_url="file:///x", deploy_path="/srv/app", build_hooks=("make",)),
        hosts=("a", "b"),
        concurrency=2,
    )
    now = datetime(2025, 1, 1, tzinfo=UTC)
    commands: list[object] = [
        RequestRelease("shop", "prod", "main", "alice", plan),
        StartBuild("b"),
        RecordSource("f" * 40, 0.5),
        RecordHook(0, "make", 0, 1.25, "built\n"),
        RecordArtifact("d" * 64, 2048, "zst", log_digest="e" * 64),
    ]
    for step in HOST_STEPS:
        commands += [StartHostStep("a", step), FinishHostStep("a", step, 0, 0.1, f"{step} ok")]
    for step in HOST_STEPS[:4]:
        commands += [StartHostStep("b", step), FinishHostStep("b", step, 0, 0.1)]
    commands += [
        StartHostStep("b", "restart"),
        FinishHostStep("b", "restart", 3, 0.2, "boom"),
        FailHost("b", "restart", "restart exited 3"),
        RollBackHost("b", None, "rolled back"),
        Fail("host b failed"),
    ]
    state = ReleaseState(rid)
    stored = []
    for i, command in enumerate(commands):
        for e in decide(state, command, now + timedelta(seconds=i)):  # type: ignore[arg-type]
            state = evolve(state, e)
            stored.append({"seq": 100 + len(stored), "event": e.model_dump(mode="json")})
    (tmp_path / "events.json").write_text(json.dumps(stored))
    script = tmp_path / "fold.mjs"
    static = (ROOT / "services/gateway/static").as_uri()
    script.write_text(
        f"import {{ replay, apply }} from '{static}/release_state.js';\n"
        f"import {{ graphOf }} from '{static}/release_graph.js';\n"
        "import { readFileSync } from 'node:fs';\n"
        + f"const stored = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'events.json'))}, 'utf8'));\n"
        f"let s = replay({json.dumps(rid)}, stored);\n"
        "const again = stored.reduce((st, e) => apply(st, e.seq, e.event), s);\n"
        "const g = graphOf(s);\n"
        "console.log(JSON.stringify({state: s, same: again === s, "
        "nodes: Object.fromEntries(g.nodes.map(n => [n.key, n.status]))}));\n"
    )
    out = json.loads(subprocess.run([node, str(script)], capture_output=True, text=True, check=True).stdout)
    js = out["state"]
    assert out["same"], "re-applying stored events must change nothing"
    assert js["status"] == state.status == "failed"
    assert js["version"] == state.version and js["last_seq"] == stored[-1]["seq"]
    assert js["commit"] == state.commit and js["reason"] == state.reason
    assert js["artifact"] == {"digest": "d" * 64, "size": 2048, "format": "zst", "reused": False}
    for name, h in state.hosts.items():
        assert js["hosts"][name]["status"] == h.status
        assert js["hosts"][name]["activated"] == h.activated
        assert {k: v["status"] for k, v in js["hosts"][name]["steps"].items()} == {
            k: v.status for k, v in h.steps.items()
        }
    nodes = out["nodes"]
    assert all(nodes[f"host:a:{s}"] == "succeeded" for s in HOST_STEPS)
    assert nodes["host:b:restart"] == "failed" and nodes["host:b:activate"] == "rolled_back"
    assert nodes["host:b:health"] == "skipped" and nodes["host:b"] == "rolled_back"
    assert nodes["build:package"] == "succeeded" and nodes["end"] == "failed"


@pytest.mark.parametrize("then", ["paused", "resumed", "cancelled"])
def test_js_reducer_mirrors_a_canary_pause(tmp_path: Path, then: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    from ferry.domain.events import Plan, Recipe
    from ferry.domain.release import Cancel, Pause, RequestRelease, Resume, RollBackHost, Succeed

    rid = "r-canary"
    plan = Plan(
        recipe=Recipe(repo_url="file:///x", deploy_path="/srv/app"),
        hosts=("a", "b", "c"),
        strategy="canary",
        canary_pause=60.0,
    )
    now = datetime(2025, 1, 1, tzinfo=UTC)
    commands: list[object] = [
        RequestRelease("shop", "prod", "main", "alice", plan),
        StartBuild("b"),
        RecordSource("f" * 40, 0.5),
        RecordArtifact("d" * 64, 2048, "zst"),
    ]
    for step in HOST_STEPS:
        commands += [StartHostStep("a", step), FinishHostStep("a", step, 0, 0.1)]
    commands.append(Pause())
    if then == "resumed":
        commands.append(Resume("bob"))
        for host in ("b", "c"):
            for step in HOST_STEPS:
                commands += [StartHostStep(host, step), FinishHostStep(host, step, 0, 0.1)]
        commands.append(Succeed())
    elif then == "cancelled":
        commands += [Cancel("bob", "5xx"), RollBackHost("a", None), Cancel("bob")]
    state = ReleaseState(rid)
    stored = []
    for i, command in enumerate(commands):
        for e in decide(state, command, now + timedelta(seconds=i)):  # type: ignore[arg-type]
            state = evolve(state, e)
            stored.append({"seq": 10 + len(stored), "event": e.model_dump(mode="json")})
    (tmp_path / "events.json").write_text(json.dumps(stored))
    script = tmp_path / "fold.mjs"
    static = (ROOT / "services/gateway/static").as_uri()
    script.write_text(
        f"import {{ replay }} from '{static}/release_state.js';\n"
        f"import {{ graphOf }} from '{static}/release_graph.js';\n"
        "import { readFileSync } from 'node:fs';\n"
        + f"const stored = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'events.json'))}, 'utf8'));\n"
        f"const s = replay({json.dumps(rid)}, stored);\n"
        "const g = graphOf(s);\n"
        "console.log(JSON.stringify({state: s, "
        "nodes: Object.fromEntries(g.nodes.map(n => [n.key, n.status])), "
        "subs: Object.fromEntries(g.nodes.map(n => [n.key, n.sub])), "
        "links: g.links.map(l => l.key)}));\n"
    )
    out = json.loads(subprocess.run([node, str(script)], capture_output=True, text=True, check=True).stdout)
    js = out["state"]
    assert js["status"] == state.status and js["version"] == state.version
    assert js["reason"] == state.reason
    for name, h in state.hosts.items():
        assert js["hosts"][name]["status"] == h.status and js["hosts"][name]["activated"] == h.activated
    assert js["canary_hosts"] == ["a"]
    assert (js["pause"]["resume_at"] is not None) and js["pause"]["hosts_done"] == ["a"]
    # the pause node sits between the canary lane and the rest
    links = set(out["links"])
    assert {"host:a->pause", "pause->host:b", "pause->host:c", "host:b->end"} <= links
    assert "build:package->host:b" not in links and "host:a->end" not in links
    expected = {"paused": "running", "resumed": "succeeded", "cancelled": "rolled_back"}[then]
    assert out["nodes"]["pause"] == expected
    if then == "paused":
        assert out["subs"]["pause"].startswith("until ")
    if then == "resumed":
        assert out["subs"]["pause"] == "resumed by bob" and out["nodes"]["end"] == "succeeded"
