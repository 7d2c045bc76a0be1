"""Hostile input found by hand (issue 9, item 10): each gets a 4xx with a JSON error naming the field.

A lone surrogate in repo_url, ref or requested_by; NUL and bidi controls in any text (names,
commands, reasons); null in a PATCH for a field that cannot be cleared; the ``Allow`` header of a
405; a webhook naming a missing project; an admin revoking its own or the last admin token.
schemathesis (``test_schemathesis.py``) searches for more of the same from the OpenAPI document.

The gateway app runs for real (lifespan, nats-server, SQLite and PostgreSQL) behind httpx's ASGI
transport, which re-raises any crash: a 500 would fail the test loudly.
"""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from ferry.domain import auth
from ferry.local.natsserver import NatsServer
from services.gateway.app import create_app
from tests.integration.api_harness import Api, api, error_of, project_body
from tests.integration.auth_harness import secured_settings


async def _raw(api: Api, method: str, path: str, text: str, **headers: str) -> Any:
    """Send ``text`` as the body verbatim (JSON escapes such as a lone ``\\ud800`` survive)."""
    return await api.client.request(
        method, path, content=text.encode(), headers={"content-type": "application/json", **headers}
    )


async def test_lone_surrogates_are_422_not_500(api: Api) -> None:
    s = await api.seed(hosts=1)
    body = json.dumps(project_body("sur"))[:-1] + ', "_": 0}'
    body = body.replace("https://git.example.com/team/app.git", "https://git.example.com/\\ud800.git")
    r = await _raw(api, "POST", "/api/projects", body.replace(', "_": 0', ""))
    assert r.status_code == 422 and error_of(r)["field"] == "repo_url", r.text
    release = '{"project": "' + s["project"] + '", "environment": "prod", "ref": "main\\ud800"}'
    r = await _raw(api, "POST", "/api/releases", release)
    assert r.status_code == 422 and error_of(r)["field"] == "ref", r.text
    r = await _raw(
        api,
        "POST",
        "/api/releases",
        release.replace('"ref": "main\\ud800"', '"ref": "main", "requested_by": "\\udfff"'),
    )
    assert r.status_code == 422 and error_of(r)["field"] == "requested_by", r.text


async def test_nul_and_bidi_controls_are_refused_in_every_text_field(api: Api) -> None:
    r = await api.post("/api/projects", project_body("nul", build_hooks=["make\x00build"]))
    assert r.status_code == 422 and error_of(r)["field"].startswith("build_hooks"), r.text
    r = await api.post("/api/projects", project_body("rtl", restart="systemctl restart app \u202e#"))
    assert r.status_code == 422 and "RIGHT-TO-LEFT OVERRIDE" in error_of(r)["message"], r.text
    r = await api.post("/api/credentials", {"name": "pw\u202ex", "kind": "password", "secret": "abc"})
    assert r.status_code == 422, r.text
    s = await api.seed(hosts=1, require_approval=True)
    rid = (
        await api.ok(
            "POST", "/api/releases", {"project": s["project"], "environment": "prod", "ref": "main"}, 202
        )
    )["id"]
    r = await api.post(f"/api/releases/{rid}/reject", {"reason": "looks fine\u2066 to me"})
    assert r.status_code == 422 and error_of(r)["field"] == "reason", r.text


async def test_repository_urls_with_credentials_are_refused(api: Api) -> None:
    for url in (
        "https://user:ghp_secret123@github.com/team/app.git",
        "https://ghp_secret123@github.com/team/app.git",
        "ssh://git:hunter2@git.example.com/team/app.git",
    ):
        r = await api.post("/api/projects", project_body("cred", repo_url=url))
        assert r.status_code == 422, (url, r.text)
        err = error_of(r)
        assert err["field"] == "repo_url" and "/api/credentials" in err["message"]
        assert "ghp_secret123" not in r.text and "hunter2" not in r.text
    r = await api.post("/api/projects", project_body("ok", repo_url="ssh://git@git.example.com/team/app.git"))
    assert r.status_code == 201, r.text


async def test_bodies_are_bounded_and_json_only(api: Api) -> None:
    limit = api.gw.settings.max_body
    r = await api.client.post(
        "/api/projects", content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and error_of(r)["field"] == "body"

    async def stream() -> Any:  # no Content-Length: counted while it streams
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = await api.client.post("/api/projects", content=stream(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    r = await api.client.post(
        "/api/projects", content=b'{"name": "x"}', headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and error_of(r)["field"] == "content-type"
    r = await api.client.post("/api/projects", data={"name": "x"})
    assert r.status_code == 415
    r = await api.client.post(
        "/api/projects", json=project_body("o"), headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403 and error_of(r)["code"] == "FOREIGN_ORIGIN"
    r = await api.client.post("/api/projects", json=project_body("h"), headers={"Host": "evil.example"})
    assert r.status_code == 421 and error_of(r)["field"] == "host"


async def test_a_client_leaving_mid_body_is_not_an_internal_error(api: Api) -> None:
    sent: list[dict[str, Any]] = []
    messages = iter(
        [{"type": "http.request", "body": b'{"name": ', "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/projects",
        "raw_path": b"/api/projects",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 5000),
        "state": {},
        "app": api.app,
    }
    await api.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400


async def test_405_lists_every_method_of_the_path(api: Api) -> None:
    r = await api.client.put("/api/credentials/x")
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}
    r = await api.client.put("/api/hosts/x")
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}


async def test_a_webhook_for_a_missing_project_is_404(api: Api) -> None:
    r = await api.post("/api/webhooks", {"name": "w", "url": "https://hooks.example/x", "project": "ghost"})
    assert r.status_code == 404 and error_of(r)["field"] == "project", r.text


async def test_four_eyes_approval(api: Api) -> None:
    s = await api.seed(hosts=1, require_approval=True)
    body = {"project": s["project"], "environment": "prod", "ref": "main"}
    rid = (await api.ok("POST", "/api/releases", {**body, "requested_by": "alice"}, 202))["id"]
    r = await api.post(f"/api/releases/{rid}/approve", {}, headers={"X-Ferry-User": "alice"})
    assert r.status_code == 403 and error_of(r)["code"] == "SELF_APPROVAL", r.text
    r = await api.post(f"/api/releases/{rid}/approve", {}, headers={"X-Ferry-User": "bob"})
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    # An environment may allow it (a team of one).
    await api.ok("PATCH", f"/api/projects/{s['project']}/environments/prod", {"allow_self_approval": True})
    rid = (await api.ok("POST", "/api/releases", {**body, "requested_by": "carol"}, 202))["id"]
    r = await api.post(f"/api/releases/{rid}/approve", {}, headers={"X-Ferry-User": "carol"})
    assert r.status_code == 200, r.text


async def test_null_in_a_patch_is_422_unless_the_field_can_be_cleared(api: Api) -> None:
    s = await api.seed(hosts=1)
    project, host = s["project"], s["hosts"][0]
    for path, body, field in (
        (f"/api/hosts/{host}", {"port": None}, "port"),
        (f"/api/projects/{project}", {"repo_url": None}, "repo_url"),
        (f"/api/projects/{project}", {"health": None}, "health"),
        (f"/api/projects/{project}/environments/prod", {"canary_size": None}, "canary_size"),
    ):
        r = await api.patch(path, body)
        assert r.status_code == 422 and error_of(r)["field"] == field, (path, r.text)
        assert "cannot be null" in error_of(r)["message"]
    # The fields the schema marks nullable are cleared by null.
    cleared = await api.ok("PATCH", f"/api/projects/{project}", {"restart": None})
    assert cleared["restart"] is None


async def test_bidi_controls_in_names_and_headers_are_refused(api: Api) -> None:
    s = await api.seed(hosts=1)
    r = await api.post("/api/projects", project_body("app\u202etxt.exe"))
    assert r.status_code == 422 and error_of(r)["field"] == "name", r.text
    env = {"name": "pr\u2066od", "hosts": s["hosts"]}
    r = await api.post(f"/api/projects/{s['project']}/environments", env)
    assert r.status_code == 422 and error_of(r)["field"] == "name", r.text
    body = {"project": s["project"], "environment": "prod", "ref": "main", "requested_by": "eve\u202e"}
    r = await api.post("/api/releases", body)
    assert r.status_code == 422 and error_of(r)["field"] == "requested_by", r.text
    # With auth off the caller names itself in X-Ferry-User: the same text policy holds there
    # (a C1 control sent as a raw latin-1 byte, and a DEL), on every request, by the guard.
    for raw in (b"eve\x9b31m", b"eve\x7f"):
        del body["requested_by"]
        r = await api.post("/api/releases", body, headers={"X-Ferry-User": raw})
        assert r.status_code == 400 and error_of(r)["field"] == "X-Ferry-User", r.text
        body["requested_by"] = "eve"
    listed = await api.ok("GET", f"/api/releases?project={s['project']}")
    assert listed["releases"] == [], "nothing was created by the refused requests"


async def test_an_admin_cannot_revoke_its_own_token_nor_the_last_admin_one(
    tmp_path: Path, nats_server: NatsServer, migrated_db: str
) -> None:
    token = auth.new_token()
    settings = secured_settings(tmp_path, nats_server.url, migrated_db, bootstrap_token=token)
    app = create_app(settings, background=False)
    bearer = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            r = await client.delete("/api/tokens/bootstrap", headers=bearer)
            assert r.status_code == 409 and error_of(r)["field"] == "name", r.text
            made = await client.post("/api/tokens", json={"name": "ops", "role": "admin"}, headers=bearer)
            assert made.status_code == 201, made.text
            r = await client.delete("/api/tokens/bootstrap", headers=bearer)  # its own, even now
            assert r.status_code == 409 and "token of this request" in error_of(r)["message"], r.text
            assert (await client.get("/api/tokens", headers=bearer)).status_code == 200
