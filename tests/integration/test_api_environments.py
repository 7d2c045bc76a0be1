"""``/api/projects/{project}/environments`` against the real gateway app, nats-server and database."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import pytest

from ferry.domain.events import ReleaseRequested
from tests.integration.api_harness import Api, api, error_of  # noqa: F401


async def test_create_list_get_patch_delete(api: Api) -> None:
    s = await api.seed(hosts=3)
    base = f"/api/projects/{s['project']}/environments"
    hosts = list(reversed(s["hosts"]))
    r = await api.post(base, {"name": "staging", "hosts": hosts, "max_failures": 1})
    assert r.status_code == 201, r.text
    env = r.json()
    assert env["hosts"] == hosts and env["concurrency"] == 1 and env["max_failures"] == 1
    assert env["require_approval"] is False and env["project"] == s["project"]
    names = [e["name"] for e in (await api.get(base)).json()["environments"]]
    assert names == ["prod", "staging"]
    assert (await api.get(f"{base}/staging")).json() == env

    r = await api.patch(f"{base}/staging", {"hosts": s["hosts"][:2], "require_approval": True})
    assert r.status_code == 200, r.text
    assert r.json()["hosts"] == s["hosts"][:2] and r.json()["require_approval"] is True

    assert (await api.delete(f"{base}/staging")).status_code == 204
    assert (await api.get(f"{base}/staging")).status_code == 404
    project = (await api.get(f"/api/projects/{s['project']}")).json()
    assert project["environments"] == ["prod"]


async def test_unknowns_and_duplicates(api: Api) -> None:
    s = await api.seed(hosts=1)
    base = f"/api/projects/{s['project']}/environments"
    r = await api.post(base, {"name": "prod", "hosts": s["hosts"]})
    assert r.status_code == 409 and error_of(r)["field"] == "name"
    r = await api.post(base, {"name": "qa", "hosts": ["ghost"]})
    assert r.status_code == 404 and error_of(r)["field"] == "hosts"
    r = await api.post("/api/projects/ghost/environments", {"name": "qa", "hosts": s["hosts"]})
    assert r.status_code == 404 and error_of(r)["field"] == "project"
    assert (await api.get("/api/projects/ghost/environments")).status_code == 404
    for r in (
        await api.get(f"{base}/ghost"),
        await api.patch(f"{base}/ghost", {"concurrency": 2}),
        await api.delete(f"{base}/ghost"),
    ):
        assert r.status_code == 404


@pytest.mark.parametrize("missing", ["name", "hosts"])
async def test_each_required_field_missing_is_named(api: Api, missing: str) -> None:
    s = await api.seed(hosts=1)
    body = {"name": "qa", "hosts": s["hosts"]}
    del body[missing]
    r = await api.post(f"/api/projects/{s['project']}/environments", body)
    assert r.status_code == 422 and error_of(r)["field"] == missing


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hosts": []}, "hosts"),
        ({"hosts": "web"}, "hosts"),
        ({"hosts": [1]}, "hosts.0"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"max_failures": -1}, "max_failures"),
        ({"require_approval": "yes"}, "require_approval"),
        ({"name": "Prod Env"}, "name"),
    ],
)
async def test_wrong_types_are_422(api: Api, change: dict, field: str) -> None:
    s = await api.seed(hosts=1)
    body = {"name": "qa", "hosts": s["hosts"], **change}
    r = await api.post(f"/api/projects/{s['project']}/environments", body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field


async def test_duplicate_hosts_are_422(api: Api) -> None:
    s = await api.seed(hosts=1)
    h = s["hosts"][0]
    r = await api.post(f"/api/projects/{s['project']}/environments", {"name": "qa", "hosts": [h, h]})
    assert r.status_code == 422 and error_of(r)["field"] == "hosts"
    r = await api.raw("POST", f"/api/projects/{s['project']}/environments", b'{"name": ')
    assert r.status_code == 400 and error_of(r)["field"] == "body"


async def test_rollout_strategy_fields(api: Api) -> None:
    s = await api.seed(hosts=3)
    base = f"/api/projects/{s['project']}/environments"
    env = await api.ok("GET", f"{base}/prod")
    assert (env["strategy"], env["batch_size"], env["canary_size"], env["canary_pause"]) == (
        "all",
        None,
        1,
        None,
    )

    body = {"name": "canary", "hosts": s["hosts"], "strategy": "canary", "canary_size": 2, "canary_pause": 30}
    env = await api.ok("POST", base, body, 201)
    assert (env["strategy"], env["canary_size"], env["canary_pause"], env["batch_size"]) == (
        "canary",
        2,
        30.0,
        None,
    )
    assert await api.ok("GET", f"{base}/canary") == env

    r = await api.patch(f"{base}/canary", {"strategy": "rolling", "batch_size": 2, "canary_pause": None})
    assert r.status_code == 200, r.text
    env = r.json()
    assert (env["strategy"], env["batch_size"], env["canary_size"], env["canary_pause"]) == (
        "rolling",
        2,
        2,
        None,
    )
    r = await api.patch(f"{base}/canary", {"batch_size": None})
    assert r.status_code == 200 and r.json()["batch_size"] is None and r.json()["strategy"] == "rolling"

    plan = await api.ok(
        "POST", "/api/releases", {"project": s["project"], "environment": "canary", "ref": "main"}, 202
    )
    events = (await api.ok("GET", f"/api/releases/{plan['id']}/events"))["events"]
    requested = events[0]["event"]
    assert requested["schema_version"] == ReleaseRequested.model_fields["schema_version"].default
    assert requested["plan"]["strategy"] == "rolling" and requested["plan"]["canary_size"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strategy": "blue-green"}, "strategy"),
        ({"strategy": 1}, "strategy"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "2"}, "batch_size"),
        ({"canary_size": 0}, "canary_size"),
        ({"canary_size": None}, "canary_size"),
        ({"canary_pause": -1}, "canary_pause"),
        ({"canary_pause": "5"}, "canary_pause"),
        ({"canary_pause": 10**9}, "canary_pause"),
    ],
)
async def test_wrong_rollout_fields_are_422_naming_them(api: Api, change: dict, field: str) -> None:
    s = await api.seed(hosts=1)
    base = f"/api/projects/{s['project']}/environments"
    r = await api.post(base, {"name": "qa", "hosts": s["hosts"], **change})
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field
    r = await api.patch(f"{base}/prod", change)  # null too: a patch leaves out what it keeps
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field
