"""``/api/credentials`` against the real gateway app, nats-server and database."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import pytest

from tests.integration.api_harness import Api, api, error_of, ssh_keypair  # noqa: F401

PASSWORD = "hunter2-correct-horse-battery"


async def test_create_list_get_delete_ssh_key(api: Api) -> None:
    private, _ = ssh_keypair()
    r = await api.post("/api/credentials", {"name": "deploy", "kind": "ssh_key", "secret": private})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "deploy" and body["kind"] == "ssh_key"
    assert body["fingerprint"].startswith("ssh-ed25519 SHA256:")
    assert "secret" not in body
    assert r.headers["location"] == "/api/credentials/deploy"

    listed = (await api.get("/api/credentials")).json()["credentials"]
    assert [c["name"] for c in listed] == ["deploy"]
    got = await api.get("/api/credentials/deploy")
    assert got.status_code == 200 and got.json() == body

    assert (await api.delete("/api/credentials/deploy")).status_code == 204
    gone = await api.get("/api/credentials/deploy")
    assert gone.status_code == 404 and error_of(gone)["code"] == "NOT_FOUND"
    api.assert_never_sent(private)
    api.assert_never_sent(private.splitlines()[1])


async def test_password_is_stored_encrypted_and_never_returned(api: Api) -> None:
    r = await api.post("/api/credentials", {"name": "pw", "kind": "password", "secret": PASSWORD})
    assert r.status_code == 201 and r.json()["fingerprint"] == "password"
    await api.get("/api/credentials")
    await api.get("/api/credentials/pw")
    await api.post("/api/credentials", {"name": "pw", "kind": "password", "secret": PASSWORD})
    api.assert_never_sent(PASSWORD)
    from sqlalchemy import select

    from ferry.db.models import Credential

    with api.gw.sessions() as s:
        stored = s.scalar(select(Credential.secret).where(Credential.name == "pw"))
    assert stored is not None and PASSWORD.encode() not in stored


async def test_duplicate_name_conflicts_naming_name(api: Api) -> None:
    body = {"name": "dup", "kind": "password", "secret": PASSWORD}
    assert (await api.post("/api/credentials", body)).status_code == 201
    r = await api.post("/api/credentials", body)
    assert r.status_code == 409
    assert error_of(r)["field"] == "name"
    api.assert_never_sent(PASSWORD)


async def test_unknown_credential_is_404(api: Api) -> None:
    for r in (await api.get("/api/credentials/nope"), await api.delete("/api/credentials/nope")):
        assert r.status_code == 404
        assert error_of(r)["code"] == "NOT_FOUND"


@pytest.mark.parametrize("missing", ["name", "kind", "secret"])
async def test_each_required_field_missing_is_named(api: Api, missing: str) -> None:
    body = {"name": "c", "kind": "password", "secret": PASSWORD}
    del body[missing]
    r = await api.post("/api/credentials", body)
    assert r.status_code == 422
    err = error_of(r)
    assert err["field"] == missing and missing in err["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 5, "kind": "password", "secret": "x"}, "name"),
        ({"name": "c", "kind": "token", "secret": "x"}, "kind"),
        ({"name": "c", "kind": "password", "secret": ["x"]}, "secret"),
        ({"name": "c", "kind": "password", "secret": ""}, "secret"),
        ({"name": "-c", "kind": "password", "secret": "x"}, "name"),
        ({"name": "c", "kind": "password", "secret": "x", "extra": 1}, "extra"),
        ({"name": "c", "kind": "ssh_key", "secret": "not a key"}, "secret"),
    ],
)
async def test_wrong_types_and_values_are_422_naming_the_field(api: Api, body: dict, field: str) -> None:
    r = await api.post("/api/credentials", body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field


async def test_unparsable_ssh_key_is_refused_without_echoing_it(api: Api) -> None:
    private, _ = ssh_keypair()
    broken = private.replace(private.splitlines()[2], private.splitlines()[2][::-1])
    r = await api.post("/api/credentials", {"name": "bad", "kind": "ssh_key", "secret": broken})
    assert r.status_code == 422 and error_of(r)["field"] == "secret"
    api.assert_never_sent(broken.splitlines()[1])
    assert (await api.get("/api/credentials/bad")).status_code == 404


@pytest.mark.parametrize("content", [b"{", b"not json", b"", b"\xff\xfe", b"[1,2]", b'"str"', b"[" * 100000])
async def test_malformed_json_is_400_naming_the_body(api: Api, content: bytes) -> None:
    r = await api.raw("POST", "/api/credentials", content)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["field"] == "body" and err["code"] == "MALFORMED_JSON"


async def test_credential_in_use_cannot_be_deleted(api: Api) -> None:
    seeded = await api.seed(hosts=1)
    r = await api.delete(f"/api/credentials/{seeded['credential']}")
    assert r.status_code == 409 and error_of(r)["field"] == "name"
    api.assert_never_sent(seeded["secret"])
