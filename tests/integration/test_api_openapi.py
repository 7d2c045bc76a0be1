"""``GET /api/openapi.json``: a valid OpenAPI 3.1 document covering every route, schemas from the models."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import json
import re

from services.gateway import api as api_module
from tests.integration.api_harness import Api, api


def _refs(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v)
            else:
                found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


async def test_document_covers_every_route(api: Api) -> None:
    r = await api.get("/api/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = json.loads(r.text)
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "ferry"
    for route in api_module.routes:
        path = "/api" + route.path
        assert path in doc["paths"], path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][path], (method, path)
    schemas = doc["components"]["schemas"]
    for name in (
        "CredentialIn",
        "HostIn",
        "ProjectIn",
        "EnvironmentIn",
        "ReleaseIn",
        "ReleaseOut",
        "ErrorResponse",
    ):
        assert name in schemas, name
    # Every reference resolves; the request schemas are the validating models' own.
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert set(schemas["ReleaseIn"]["required"]) == {"project", "environment", "ref"}
    assert schemas["CredentialIn"]["properties"]["secret"]["writeOnly"] is True
    assert "secret" not in schemas["CredentialOut"]["properties"]
    post = doc["paths"]["/api/releases"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReleaseIn")
    assert {"202", "404", "422"} <= set(post["responses"])
    for path in doc["paths"]:
        for name in re.findall(r"{(\w+)}", path):
            for op in doc["paths"][path].values():
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])


async def test_every_refusal_of_the_guard_and_the_store_is_documented(api: Api) -> None:
    doc = (await api.get("/api/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            documented = set(op["responses"])
            assert {"400", "413", "421"} <= documented, (method, path)  # any request
            if method not in ("get", "head"):
                assert {"403", "415"} <= documented, (method, path)
            assert ("503" in documented) == (path != "/api/openapi.json"), (method, path)
    r = await api.client.get("/api/hosts", headers={"Host": "evil.example"})
    assert r.status_code == 421 and "421" in doc["paths"]["/api/hosts"]["get"]["responses"]
    r = await api.client.get("/api/hosts", headers={"Content-Length": "x"})
    assert r.status_code == 400, r.text
