"""``/api/releases`` on the real gateway app, nats-server and database (no orchestrator running)."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import asyncio
import os
import re
import uuid

import pytest

from ferry.domain.events import HOST_STEPS, utcnow
from ferry.domain.release import RecordArtifact, RecordSource, StartBuild, decide, replay
from tests.harness.history import append_next
from tests.integration.api_harness import Api, api, error_of

ID = re.compile(r"^r\d{17}-[0-9a-f]{8}$")


async def _advance(api: Api, release_id: str, *commands: object) -> None:
    """Append what the builder would, through the aggregate (as the worker does)."""
    store = api.gw.bus.events
    for command in commands:
        state = replay(release_id, [s.event for s in await store.load(release_id)])
        await append_next(store, decide(state, command, utcnow()))  # type: ignore[arg-type]


async def test_request_appends_release_requested_with_the_plan(api: Api) -> None:
    s = await api.seed(hosts=3)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    r = await api.post("/api/releases", body, headers={"X-Ferry-User": "alice"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert ID.match(created["id"]) and created["status"] == "queued" and created["last_seq"] >= 1
    assert r.headers["location"] == created["links"]["self"] == f"/api/releases/{created['id']}"

    events = (await api.get(created["links"]["events"])).json()["events"]
    assert len(events) == 1 and events[0]["seq"] == created["last_seq"]
    requested = events[0]["event"]
    assert requested["type"] == "release.requested" and requested["version"] == 1
    assert (requested["project"], requested["environment"], requested["ref"]) == (
        s["project"],
        "prod",
        "main",
    )
    assert requested["requested_by"] == "alice"
    plan = requested["plan"]
    assert plan["hosts"] == s["hosts"] and plan["concurrency"] == 2 and plan["require_approval"] is False
    recipe = plan["recipe"]
    assert recipe["deploy_path"] == "/srv/app" and recipe["repo_credential"] == s["credential"]
    assert recipe["build_hooks"] == ["make build"] and recipe["health"]["kind"] == "http"

    view = (await api.get(f"/api/releases/{created['id']}")).json()
    assert view["status"] == "queued" and view["last_seq"] == created["last_seq"] and view["version"] == 1
    assert view["requested_by"] == "alice" and view["artifact"] is None and view["commit"] is None
    assert view["build"] == {"status": "waiting", "hooks": [], "log_digest": None, "output_tail": ""}
    assert [h["name"] for h in view["hosts"]] == s["hosts"]
    for h in view["hosts"]:
        assert h["status"] == "waiting"
        assert [st["step"] for st in h["steps"]] == list(HOST_STEPS)
        assert {st["status"] for st in h["steps"]} == {"waiting"}
    api.assert_never_sent(s["secret"])


async def test_anonymous_by_default_and_body_requested_by(api: Api) -> None:
    s = await api.seed(hosts=1)
    body = {"project": s["project"], "environment": "prod", "ref": "v1.0"}
    rid = (await api.ok("POST", "/api/releases", body, 202))["id"]
    assert (await api.ok("GET", f"/api/releases/{rid}"))["requested_by"] == "anonymous"
    rid = (await api.ok("POST", "/api/releases", {**body, "requested_by": "ci"}, 202))["id"]
    assert (await api.ok("GET", f"/api/releases/{rid}"))["requested_by"] == "ci"


async def test_unknown_project_or_environment_is_404_naming_it(api: Api) -> None:
    s = await api.seed(hosts=1)
    r = await api.post("/api/releases", {"project": "ghost", "environment": "prod", "ref": "main"})
    assert r.status_code == 404 and error_of(r)["field"] == "project"
    r = await api.post("/api/releases", {"project": s["project"], "environment": "ghost", "ref": "main"})
    assert r.status_code == 404 and error_of(r)["field"] == "environment"


async def test_option_injection_ref_is_422_and_runs_nothing(api: Api) -> None:
    s = await api.seed(hosts=1)
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    for ref in (f"--upload-pack=touch {marker}", f"-u{marker}", "main..dev", "a\nb", "HEAD@{1}", "x:y"):
        r = await api.post("/api/releases", {"project": s["project"], "environment": "prod", "ref": ref})
        assert r.status_code == 422, (ref, r.text)
        err = error_of(r)
        assert err["field"] == "ref" and err["code"] == "INVALID_REF", err
    await asyncio.sleep(0)
    assert not os.path.exists(marker)  # noqa: ASYNC240
    assert await api.gw.bus.events.last_seq() == 0  # nothing was appended


@pytest.mark.parametrize("missing", ["project", "environment", "ref"])
async def test_missing_field_is_422_naming_it(api: Api, missing: str) -> None:
    body = {"project": "p", "environment": "prod", "ref": "main"}
    del body[missing]
    r = await api.post("/api/releases", body)
    assert r.status_code == 422
    err = error_of(r)
    assert err["field"] == missing and missing in err["message"]


async def test_unknown_and_invalid_release_ids(api: Api) -> None:
    r = await api.get("/api/releases/r0-nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND"
    assert (await api.get("/api/releases/r0-nothing/events")).status_code == 404
    for bad in ("a.b", "x" * 65, "%20", "r%2Fx"):
        r = await api.get(f"/api/releases/{bad}")
        assert r.status_code in (404, 422), r.text
    r = await api.get("/api/releases/a.b")
    assert r.status_code == 422 and error_of(r)["field"] == "id"
    r = await api.post("/api/releases/a.b/approve")
    assert r.status_code == 422 and error_of(r)["field"] == "id"


async def test_approve_reject_cancel(api: Api) -> None:
    s = await api.seed(hosts=2, require_approval=True)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    rid = (await api.ok("POST", "/api/releases", body, 202))["id"]
    assert (await api.ok("GET", f"/api/releases/{rid}"))["status"] == "awaiting_approval"

    r = await api.post(f"/api/releases/{rid}/approve", headers={"X-Ferry-User": "boss"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["version"] == 2
    events = (await api.ok("GET", f"/api/releases/{rid}/events"))["events"]
    assert events[-1]["event"]["type"] == "release.approved" and events[-1]["event"]["by"] == "boss"
    assert r.json()["last_seq"] == events[-1]["seq"]

    r = await api.post(f"/api/releases/{rid}/approve")
    assert r.status_code == 409 and "not awaiting approval" in error_of(r)["message"]
    r = await api.post(f"/api/releases/{rid}/cancel", {"reason": "wrong branch"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["reason"] == "wrong branch" and r.json()["build"]["status"] == "cancelled"
    r = await api.post(f"/api/releases/{rid}/cancel", {"reason": "again"})
    assert r.status_code == 409 and "already cancelled" in error_of(r)["message"]

    rid2 = (await api.ok("POST", "/api/releases", body, 202))["id"]
    r = await api.post(f"/api/releases/{rid2}/reject", {"reason": "freeze"})
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reason"] == "freeze"
    r = await api.post(f"/api/releases/{rid2}/reject", {"reason": 5})
    assert r.status_code == 422 and error_of(r)["field"] == "reason"
    r = await api.raw("POST", f"/api/releases/{rid2}/cancel", b"{bad")
    assert r.status_code == 400 and error_of(r)["field"] == "body"
    assert (await api.post("/api/releases/r0-ghost/approve")).status_code == 404


async def test_build_progress_and_logs_only_when_referenced(api: Api) -> None:
    s = await api.seed(hosts=1)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    rid = (await api.ok("POST", "/api/releases", body, 202))["id"]
    artifacts = api.gw.bus.artifacts
    log = await artifacts.put_bytes(b"building...\nok\n")
    other = await artifacts.put_bytes(b"someone else's log")
    art = await artifacts.put_bytes(b"artifact bytes")
    await _advance(
        api,
        rid,
        StartBuild("b1"),
        RecordSource("a" * 40, 0.1),
        RecordArtifact(art.digest, art.size, "zst", log_digest=log.digest),
    )
    view = await api.ok("GET", f"/api/releases/{rid}")
    assert view["status"] == "deploying" and view["commit"] == "a" * 40
    assert view["artifact"] == {"digest": art.digest, "size": art.size, "format": "zst", "reused": False}
    assert view["build"]["status"] == "succeeded" and view["build"]["log_digest"] == log.digest

    r = await api.get(f"/api/releases/{rid}/logs/{log.digest}")
    assert r.status_code == 200 and r.text == "building...\nok\n"
    assert r.headers["content-type"].startswith("text/plain")
    for digest in (other.digest, art.digest, "../../etc/passwd", "x"):
        r = await api.get(f"/api/releases/{rid}/logs/{digest}")
        assert r.status_code == 404, digest


async def test_list_from_the_read_model(api: Api) -> None:
    s = await api.seed(hosts=1)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    ids = [(await api.ok("POST", "/api/releases", body, 202))["id"] for _ in range(3)]
    await api.ok("POST", f"/api/releases/{ids[0]}/cancel", {"reason": "x"})
    stop = asyncio.Event()
    projector = api.gw.projector
    task = asyncio.create_task(projector.run(api.gw.bus, stop))
    try:
        await projector.wait(await api.gw.bus.events.last_seq())
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    listed = (await api.ok("GET", "/api/releases"))["releases"]
    assert [x["id"] for x in listed] == list(reversed(ids))
    q = f"/api/releases?project={s['project']}&status=cancelled"
    assert [x["id"] for x in (await api.ok("GET", q))["releases"]] == [ids[0]]
    assert len((await api.ok("GET", "/api/releases?limit=2"))["releases"]) == 2
    assert (await api.ok("GET", "/api/releases?environment=staging"))["releases"] == []
    for query, field in (
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("status=done", "status"),
        ("nope=1", "nope"),
    ):
        r = await api.get(f"/api/releases?{query}")
        assert r.status_code == 422 and error_of(r)["field"] == field, r.text


async def _paused_canary(api: Api) -> str:
    from ferry.domain.release import FinishHostStep, Pause, StartHostStep

    s = await api.seed(hosts=3)
    await api.ok("PATCH", f"/api/projects/{s['project']}/environments/prod", {"strategy": "canary"}, 200)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    rid = (await api.ok("POST", "/api/releases", body, 202))["id"]
    await _advance(api, rid, StartBuild(), RecordSource("f" * 40), RecordArtifact("d" * 64, 10, "zst"))
    first = s["hosts"][0]
    for step in HOST_STEPS:
        await _advance(api, rid, StartHostStep(first, step), FinishHostStep(first, step, 0, 0.1))
    await _advance(api, rid, Pause())
    return rid


async def test_resume_a_paused_canary(api: Api) -> None:
    rid = await _paused_canary(api)
    view = await api.ok("GET", f"/api/releases/{rid}")
    assert view["status"] == "paused"
    assert view["pause"]["hosts_done"] == [view["hosts"][0]["name"]] and view["pause"]["resume_at"] is None

    r = await api.post(f"/api/releases/{rid}/resume", headers={"X-Ferry-User": "bob"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "deploying" and r.json()["pause"]["resumed_by"] == "bob"
    events = (await api.ok("GET", f"/api/releases/{rid}/events"))["events"]
    assert events[-1]["event"] | {"at": None} == {
        "type": "release.resumed",
        "schema_version": 1,
        "release_id": rid,
        "version": events[-1]["event"]["version"],
        "at": None,
        "by": "bob",
    }
    r = await api.post(f"/api/releases/{rid}/resume")
    assert r.status_code == 409 and "not paused" in error_of(r)["message"]
    assert (await api.post("/api/releases/r0-ghost/resume")).status_code == 404


async def test_approve_resumes_a_paused_canary_and_cancel_asks_for_a_rollback(api: Api) -> None:
    rid = await _paused_canary(api)
    r = await api.post(f"/api/releases/{rid}/approve", headers={"X-Ferry-User": "carol"})
    assert r.status_code == 200 and r.json()["status"] == "deploying", r.text

    rid = await _paused_canary(api)
    r = await api.post(f"/api/releases/{rid}/cancel", {"reason": "canary 5xx"})
    assert r.status_code == 200 and r.json()["status"] == "cancelling", r.text
    r = await api.post(f"/api/releases/{rid}/cancel")
    assert r.status_code == 409 and "rolled back" in error_of(r)["message"]
