"""``/api/hosts`` against the real gateway app, nats-server and database."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import pytest

from tests.integration.api_harness import Api, api, error_of, ssh_keypair  # noqa: F401


async def _credential(api: Api) -> str:
    await api.ok("POST", "/api/credentials", {"name": "pw", "kind": "password", "secret": "s3cret-pw"}, 201)
    return "pw"


async def test_create_list_get_patch_delete(api: Api) -> None:
    cred = await _credential(api)
    _, public = ssh_keypair()
    r = await api.post(
        "/api/hosts", {"name": "web1", "address": "10.0.0.5", "credential": cred, "host_key": public}
    )
    assert r.status_code == 201, r.text
    host = r.json()
    assert host["port"] == 22 and host["user"] == "root" and host["host_key_policy"] == "pinned"
    assert host["host_key"] == " ".join(public.split()[:2])
    assert [h["name"] for h in (await api.get("/api/hosts")).json()["hosts"]] == ["web1"]
    assert (await api.get("/api/hosts/web1")).json() == host

    patched = await api.patch("/api/hosts/web1", {"port": 2222, "user": "deploy"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["port"] == 2222 and patched.json()["user"] == "deploy"
    assert patched.json()["host_key"] == host["host_key"]

    assert (await api.delete("/api/hosts/web1")).status_code == 204
    assert (await api.get("/api/hosts/web1")).status_code == 404
    api.assert_never_sent("s3cret-pw")


async def test_tofu_host_needs_no_key_and_pinned_does(api: Api) -> None:
    cred = await _credential(api)
    r = await api.post(
        "/api/hosts", {"name": "t", "address": "h.example", "credential": cred, "host_key_policy": "tofu"}
    )
    assert r.status_code == 201 and r.json()["host_key"] is None
    r = await api.post("/api/hosts", {"name": "p", "address": "h.example", "credential": cred})
    assert r.status_code == 422 and error_of(r)["field"] == "host_key"
    # Switching the tofu host to pinned without a key is refused too: the body is valid, the host
    # as it is has no key, so it is a conflict with its state (409), as the schema documents.
    r = await api.patch("/api/hosts/t", {"host_key_policy": "pinned"})
    assert r.status_code == 409 and error_of(r)["field"] == "host_key", r.text
    assert "pinned host needs its host key" in error_of(r)["message"]


@pytest.mark.parametrize(
    "key",
    ["ssh-ed25519", "ssh-ed25519 !!!notbase64", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "nope AAAA"],
)
async def test_invalid_host_key_is_422(api: Api, key: str) -> None:
    cred = await _credential(api)
    r = await api.post("/api/hosts", {"name": "h", "address": "h", "credential": cred, "host_key": key})
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == "host_key"


async def test_unknown_credential_is_404_naming_it(api: Api) -> None:
    _, public = ssh_keypair()
    r = await api.post("/api/hosts", {"name": "h", "address": "h", "credential": "ghost", "host_key": public})
    assert r.status_code == 404 and error_of(r)["field"] == "credential"


async def test_duplicate_and_unknown(api: Api) -> None:
    cred = await _credential(api)
    body = {"name": "h", "address": "h", "credential": cred, "host_key_policy": "tofu"}
    assert (await api.post("/api/hosts", body)).status_code == 201
    r = await api.post("/api/hosts", body)
    assert r.status_code == 409 and error_of(r)["field"] == "name"
    for r in (
        await api.get("/api/hosts/ghost"),
        await api.patch("/api/hosts/ghost", {"port": 23}),
        await api.delete("/api/hosts/ghost"),
    ):
        assert r.status_code == 404, r.text


@pytest.mark.parametrize("missing", ["name", "address", "credential"])
async def test_each_required_field_missing_is_named(api: Api, missing: str) -> None:
    body = {"name": "h", "address": "h", "credential": "c", "host_key_policy": "tofu"}
    del body[missing]
    r = await api.post("/api/hosts", body)
    assert r.status_code == 422 and error_of(r)["field"] == missing


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": "22"}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"address": "-oProxyCommand=x"}, "address"),
        ({"address": "a b"}, "address"),
        ({"user": "-l"}, "user"),
        ({"host_key_policy": "yolo"}, "host_key_policy"),
        ({"name": "../etc"}, "name"),
    ],
)
async def test_wrong_types_are_422(api: Api, change: dict, field: str) -> None:
    body = {"name": "h", "address": "h", "credential": "c", "host_key_policy": "tofu", **change}
    r = await api.post("/api/hosts", body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field


async def test_patch_cannot_rename_or_take_bad_json(api: Api) -> None:
    cred = await _credential(api)
    await api.ok(
        "POST",
        "/api/hosts",
        {"name": "h", "address": "h", "credential": cred, "host_key_policy": "tofu"},
        201,
    )
    r = await api.patch("/api/hosts/h", {"name": "other"})
    assert r.status_code == 422 and error_of(r)["field"] == "name"
    r = await api.raw("PATCH", "/api/hosts/h", b"{nope")
    assert r.status_code == 400 and error_of(r)["field"] == "body"


async def test_host_in_an_environment_cannot_be_deleted(api: Api) -> None:
    seeded = await api.seed(hosts=1)
    r = await api.delete(f"/api/hosts/{seeded['hosts'][0]}")
    assert r.status_code == 409 and error_of(r)["field"] == "name"


async def test_agent_group_is_created_patched_and_validated(api: Api) -> None:
    cred = await _credential(api)
    base = {"address": "h.example", "credential": cred, "host_key_policy": "tofu"}
    r = await api.post("/api/hosts", {"name": "a", **base})
    assert r.status_code == 201 and r.json()["agent_group"] == "default"
    r = await api.post("/api/hosts", {"name": "b", **base, "agent_group": "eu-west"})
    assert r.status_code == 201 and r.json()["agent_group"] == "eu-west"
    assert (await api.get("/api/hosts/b")).json()["agent_group"] == "eu-west"
    r = await api.patch("/api/hosts/a", {"agent_group": "dc2"})
    assert r.status_code == 200 and r.json()["agent_group"] == "dc2"
    r = await api.patch("/api/hosts/a", {"port": 2200})
    assert r.status_code == 200 and r.json()["agent_group"] == "dc2"
    for bad in ("EU", "", "eu.west", "-x", 7, None, "x" * 51):
        r = await api.post("/api/hosts", {"name": "c", **base, "agent_group": bad})
        assert r.status_code == 422 and error_of(r)["field"] == "agent_group", (bad, r.text)
        r = await api.patch("/api/hosts/a", {"agent_group": bad})
        assert r.status_code == 422 and error_of(r)["field"] == "agent_group", (bad, r.text)
    assert (await api.get("/api/hosts/a")).json()["agent_group"] == "dc2"
