"""``/api/projects`` on the real gateway app, nats-server and database; refs from the real builder handler."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.builder.mirror import MirrorCache
from services.builder.worker import BuilderDeps, list_refs
from tests.harness.gitrepo import GitRepoFactory
from tests.integration.api_harness import Api, api, error_of, project_body  # noqa: F401


async def test_create_list_get_patch_delete(api: Api) -> None:
    r = await api.post("/api/projects", project_body("shop"))
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["deploy_path"] == "/srv/app" and p["artifact_format"] == "zst" and p["keep_releases"] == 3
    assert p["health"]["kind"] == "http" and p["health"]["retries"] == 3 and p["environments"] == []
    assert p["repo_credential"] is None and p["hook_timeout"] == 600.0
    assert [x["name"] for x in (await api.get("/api/projects")).json()["projects"]] == ["shop"]
    assert (await api.get("/api/projects/shop")).json() == p

    r = await api.patch(
        "/api/projects/shop", {"keep_releases": 7, "build_hooks": ["npm ci", "npm run build"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["keep_releases"] == 7 and r.json()["build_hooks"] == ["npm ci", "npm run build"]
    assert r.json()["deploy_path"] == "/srv/app"

    assert (await api.delete("/api/projects/shop")).status_code == 204
    assert (await api.get("/api/projects/shop")).status_code == 404


async def test_minimal_project_gets_defaults(api: Api) -> None:
    body = {"name": "min", "repo_url": "git@github.com:team/min.git", "deploy_path": "/srv/min/"}
    r = await api.post("/api/projects", body)
    assert r.status_code == 201, r.text
    assert r.json()["deploy_path"] == "/srv/min" and r.json()["health"]["kind"] == "none"


async def test_duplicate_unknown_and_unknown_credential(api: Api) -> None:
    assert (await api.post("/api/projects", project_body("dup"))).status_code == 201
    r = await api.post("/api/projects", project_body("dup"))
    assert r.status_code == 409 and error_of(r)["field"] == "name"
    r = await api.post("/api/projects", project_body("other", repo_credential="ghost"))
    assert r.status_code == 404 and error_of(r)["field"] == "repo_credential"
    for r in (
        await api.get("/api/projects/ghost"),
        await api.patch("/api/projects/ghost", {"keep_releases": 2}),
        await api.delete("/api/projects/ghost"),
        await api.get("/api/projects/ghost/refs"),
    ):
        assert r.status_code == 404, r.text


@pytest.mark.parametrize("missing", ["name", "repo_url", "deploy_path"])
async def test_each_required_field_missing_is_named(api: Api, missing: str) -> None:
    body = project_body("p")
    del body[missing]
    r = await api.post("/api/projects", body)
    assert r.status_code == 422 and error_of(r)["field"] == missing


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"name": "My Project"}, "name", "VALIDATION"),
        ({"repo_url": "ext::sh -c touch% /tmp/pwned"}, "repo_url", "INVALID_INPUT"),
        ({"repo_url": "--upload-pack=touch /tmp/x"}, "repo_url", "INVALID_INPUT"),
        ({"repo_url": 42}, "repo_url", "VALIDATION"),
        ({"deploy_path": "srv/app"}, "deploy_path", "INVALID_PATH"),
        ({"deploy_path": "/srv/../etc"}, "deploy_path", "INVALID_PATH"),
        ({"deploy_path": "/"}, "deploy_path", "INVALID_PATH"),
        ({"shared_files": ["../../etc/passwd"]}, "shared_files.0", "INVALID_PATH"),
        ({"shared_dirs": ["/abs"]}, "shared_dirs.0", "INVALID_PATH"),
        ({"keep_releases": 0}, "keep_releases", "VALIDATION"),
        ({"keep_releases": 1.5}, "keep_releases", "VALIDATION"),
        ({"artifact_format": "rar"}, "artifact_format", "VALIDATION"),
        ({"build_hooks": "make"}, "build_hooks", "VALIDATION"),
        ({"build_hooks": [""]}, "build_hooks.0", "VALIDATION"),
        ({"hook_timeout": -1}, "hook_timeout", "VALIDATION"),
        ({"health": {"kind": "http", "target": "ftp://x"}}, "health.target", "INVALID_INPUT"),
        ({"health": {"kind": "command"}}, "health.target", "INVALID_INPUT"),
        ({"health": {"kind": "http", "target": "http://x/", "timeout": 0}}, "health.timeout", "VALIDATION"),
        ({"health": "http://x"}, "health", "VALIDATION"),
        ({"restart": ""}, "restart", "VALIDATION"),
    ],
)
async def test_wrong_values_are_422_naming_the_field(api: Api, change: dict, field: str, code: str) -> None:
    r = await api.post("/api/projects", {**project_body("p"), **change})
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert (err["field"], err["code"]) == (field, code), err


async def test_patch_is_validated_as_a_whole(api: Api) -> None:
    await api.ok("POST", "/api/projects", project_body("p"), 201)
    r = await api.patch("/api/projects/p", {"deploy_path": "relative"})
    assert r.status_code == 422 and error_of(r)["field"] == "deploy_path"
    r = await api.patch("/api/projects/p", {"health": {"kind": "command"}})
    assert r.status_code == 422 and error_of(r)["field"] == "health.target"
    r = await api.patch("/api/projects/p", {"name": "q"})
    assert r.status_code == 422 and error_of(r)["field"] == "name"
    assert (await api.get("/api/projects/p")).json()["deploy_path"] == "/srv/app"


async def test_refs_without_a_builder_is_503(api: Api) -> None:
    await api.ok("POST", "/api/projects", project_body("p"), 201)
    r = await api.get("/api/projects/p/refs")
    assert r.status_code == 503
    err = error_of(r)
    assert err["code"] == "SERVICE_UNAVAILABLE" and "builder" in err["message"]


async def test_refs_from_the_builder_mirror(api: Api, git_repos: GitRepoFactory, tmp_path: Path) -> None:
    repo = git_repos.create("app")
    first = repo.head
    repo.tag("v1.0")
    second = repo.commit({"a.txt": "a\n"}, "second")
    repo.branch("feature")
    deps = BuilderDeps(
        bus=api.gw.bus,
        mirrors=MirrorCache(tmp_path / "mirrors"),
        builds=None,  # type: ignore[arg-type]  # list_refs needs no build cache
        workdir=tmp_path / "work",
        secret=lambda name: "",
    )

    async def handler(msg) -> None:
        await list_refs(msg, deps)

    sub = await api.gw.bus.nc.subscribe("ferry.builder.refs", cb=handler)
    try:
        await api.ok("POST", "/api/projects", project_body("p", repo_url=f"file://{repo.path}"), 201)
        r = await api.get("/api/projects/p/refs")
        assert r.status_code == 200, r.text
        refs = r.json()
        assert {b["name"]: b["commit"] for b in refs["branches"]} == {"main": second, "feature": second}
        assert {t["name"]: t["commit"] for t in refs["tags"]} == {"v1.0": first}

        missing = f"file://{tmp_path}/nothing-{uuid.uuid4().hex}"
        await api.ok("POST", "/api/projects", project_body("gone", repo_url=missing), 201)
        r = await api.get("/api/projects/gone/refs")
        assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
        assert error_of(r)["message"]
    finally:
        await sub.unsubscribe()
