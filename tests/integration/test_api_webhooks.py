"""``/api/webhooks`` against the real gateway app, nats-server and database."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import pytest
from sqlalchemy import select

from ferry.db.models import Webhook
from ferry.domain import webhooks
from tests.integration.api_harness import Api, api, error_of, project_body

SECRET = "whsec-correct-horse-battery-staple"
URL = "https://hooks.example.com/ferry"


async def test_create_list_get_patch_delete_never_returning_the_secret(api: Api) -> None:
    await api.ok("POST", "/api/projects", project_body("shop"), 201)  # a webhook names a project that exists
    r = await api.post(
        "/api/webhooks", {"name": "ops", "url": URL, "kind": "generic", "secret": SECRET, "project": "shop"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "ops" and body["url"] == URL and body["kind"] == "generic"
    assert body["project"] == "shop" and body["enabled"] is True and body["has_secret"] is True
    assert body["events"] == list(webhooks.DEFAULT_EVENTS)
    assert "secret" not in body
    assert r.headers["location"] == "/api/webhooks/ops"

    assert [w["name"] for w in (await api.ok("GET", "/api/webhooks"))["webhooks"]] == ["ops"]
    assert await api.ok("GET", "/api/webhooks/ops") == body

    patched = await api.ok(
        "PATCH", "/api/webhooks/ops", {"events": ["release.", "host.failed"], "enabled": False}
    )
    assert patched["events"] == ["release.", "host.failed"] and patched["enabled"] is False
    assert patched["has_secret"] is True and patched["project"] == "shop"  # untouched fields stay

    cleared = await api.ok("PATCH", "/api/webhooks/ops", {"secret": None, "project": None, "events": None})
    assert cleared["has_secret"] is False and cleared["project"] is None
    assert cleared["events"] == list(webhooks.DEFAULT_EVENTS)

    assert (await api.delete("/api/webhooks/ops")).status_code == 204
    gone = await api.get("/api/webhooks/ops")
    assert gone.status_code == 404 and error_of(gone)["field"] == "name"
    api.assert_never_sent(SECRET)


async def test_secret_is_encrypted_at_rest_and_replaced_by_patch(api: Api) -> None:
    await api.ok(
        "POST", "/api/webhooks", {"name": "ding", "url": URL, "kind": "dingtalk", "secret": SECRET}, 201
    )
    await api.ok("PATCH", "/api/webhooks/ding", {"secret": SECRET + "-2"})
    with api.gw.sessions() as s:
        stored = s.scalar(select(Webhook.secret).where(Webhook.name == "ding"))
    assert stored is not None and SECRET.encode() not in stored
    assert api.gw.box.decrypt(stored) == SECRET + "-2"
    await api.get("/api/webhooks")
    await api.get("/api/webhooks/ding")
    await api.get("/api/webhooks/ding/deliveries")
    await api.get("/api/openapi.json")
    api.assert_never_sent(SECRET)


async def test_duplicate_name_conflicts_naming_name(api: Api) -> None:
    body = {"name": "dup", "url": URL, "kind": "slack", "secret": SECRET}
    await api.ok("POST", "/api/webhooks", body, 201)
    r = await api.post("/api/webhooks", body)
    assert r.status_code == 409 and error_of(r)["field"] == "name"
    api.assert_never_sent(SECRET)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": 5}, "url"),
        ({"kind": "teams"}, "kind"),
        ({"events": ["release.exploded"]}, "events.0"),
        ({"events": ["release.failed", "nothing."]}, "events.1"),
        ({"events": []}, "events"),
        ({"events": "release.failed"}, "events"),
        ({"project": "Not A Slug!"}, "project"),
        ({"name": "bad name"}, "name"),
        ({"secret": ""}, "secret"),
        ({"enabled": "yes"}, "enabled"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_input_is_422_naming_the_field(api: Api, overrides: dict, field: str) -> None:
    body = {"name": "w", "url": URL, "kind": "generic", "secret": SECRET, **overrides}
    r = await api.post("/api/webhooks", body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field
    api.assert_never_sent(SECRET)


@pytest.mark.parametrize("missing", ["name", "url"])
async def test_required_fields(api: Api, missing: str) -> None:
    body = {"name": "w", "url": URL}
    del body[missing]
    r = await api.post("/api/webhooks", body)
    assert r.status_code == 422 and error_of(r)["field"] == missing


async def test_patch_validates_and_unknown_webhook_is_404(api: Api) -> None:
    await api.ok("POST", "/api/webhooks", {"name": "w", "url": URL}, 201)
    r = await api.patch("/api/webhooks/w", {"url": "gopher://x"})
    assert r.status_code == 422 and error_of(r)["field"] == "url"
    for r in (
        await api.get("/api/webhooks/nope"),
        await api.patch("/api/webhooks/nope", {"enabled": False}),
        await api.delete("/api/webhooks/nope"),
        await api.get("/api/webhooks/nope/deliveries"),
    ):
        assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND"


async def test_deliveries_start_empty(api: Api) -> None:
    await api.ok("POST", "/api/webhooks", {"name": "w", "url": URL}, 201)
    assert await api.ok("GET", "/api/webhooks/w/deliveries") == {"deliveries": []}


async def test_openapi_documents_webhooks_with_a_write_only_secret(api: Api) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    assert {"get", "post"} <= set(doc["paths"]["/api/webhooks"])
    assert {"get", "patch", "delete"} <= set(doc["paths"]["/api/webhooks/{name}"])
    schemas = doc["components"]["schemas"]
    assert schemas["WebhookIn"]["properties"]["secret"]["writeOnly"] is True
    assert "secret" not in schemas["WebhookOut"]["properties"]
    assert set(schemas["WebhookIn"]["required"]) == {"name", "url"}
