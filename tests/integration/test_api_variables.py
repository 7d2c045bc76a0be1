"""``/api/projects/{project}/variables`` on the real gateway app, SQLite and PostgreSQL: values go in
and never come out, refusals name the field, hostile bodies and names never get a 5xx."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import json
import random

from sqlalchemy import select

from ferry.db import repo
from ferry.db.models import ProjectVariable
from ferry.domain.variables import MAX_VARIABLES
from tests.integration.api_harness import Api, api, error_of
from tests.integration.test_api_fuzz import RAW, WEIRD, mutations

VALUE = "v-" + "9f3c" * 8


async def test_set_replace_list_delete_and_the_value_never_comes_back(api: Api) -> None:
    s = await api.seed(hosts=1)
    base = f"/api/projects/{s['project']}/variables"
    created = await api.ok("PUT", f"{base}/DB_PASSWORD", {"value": VALUE})
    assert created["created"] is True and created["name"] == "DB_PASSWORD"
    replaced = await api.ok("PUT", f"{base}/DB_PASSWORD", {"value": VALUE + "-2"})
    assert replaced["created"] is False and replaced["updated_at"] >= created["updated_at"]
    await api.ok("PUT", f"{base}/API_TOKEN", {"value": "ü" * 4 + "\n" + "line two"})
    listed = await api.ok("GET", base)
    assert [v["name"] for v in listed["variables"]] == ["API_TOKEN", "DB_PASSWORD"]
    assert set(await api.ok("GET", f"{base}/API_TOKEN")) == {"project", "name", "created_at", "updated_at"}

    with api.gw.sessions() as session:
        stored = {v.name: v.value for v in session.scalars(select(ProjectVariable))}
        assert VALUE.encode() not in b"".join(stored.values())
        values = repo.load_variables(session, api.gw.box, s["project"])
    assert values == {"DB_PASSWORD": VALUE + "-2", "API_TOKEN": "üüüü\nline two"}

    assert (await api.delete(f"{base}/API_TOKEN")).status_code == 204
    assert (await api.delete(f"{base}/API_TOKEN")).status_code == 404
    assert (await api.delete(f"/api/projects/{s['project']}")).status_code == 204
    with api.gw.sessions() as session:  # the project's variables went with it
        assert list(session.scalars(select(ProjectVariable))) == []
    api.assert_never_sent(VALUE)


async def test_refusals_name_the_field_and_never_quote_the_value(api: Api) -> None:
    s = await api.seed(hosts=1)
    base = f"/api/projects/{s['project']}/variables"
    cases = {
        f"{base}/lower_case": ({"value": VALUE}, 422, "name"),
        f"{base}/FERRY_RELEASE_ID": ({"value": VALUE}, 422, "name"),
        f"{base}/LD_PRELOAD": ({"value": VALUE}, 422, "name"),
        f"{base}/BASH_ENV": ({"value": VALUE}, 422, "name"),
        f"{base}/{'A' * 65}": ({"value": VALUE}, 422, "name"),
        f"{base}/SHORT": ({"value": "abc"}, 422, "value"),
        f"{base}/BLANK": ({"value": "      "}, 422, "value"),
        f"{base}/HUGE": ({"value": "x" * (32 * 1024 + 1)}, 422, "value"),
        f"{base}/WIDE": ({"value": "é" * (32 * 1024 + 1)}, 422, "value"),
        f"{base}/CONTROL": ({"value": VALUE + "\x1b"}, 422, "value"),
        f"{base}/EXTRA": ({"value": VALUE, "name": "X"}, 422, "name"),
        f"{base}/NUMBER": ({"value": 12345}, 422, "value"),
        "/api/projects/nope/variables/GOOD": ({"value": VALUE}, 404, "project"),
    }
    for path, (body, status, field) in cases.items():
        r = await api.client.put(path, json=body)
        assert r.status_code == status, (path, r.text)
        assert error_of(r)["field"] == field, (path, r.text)
    short = await api.client.put(f"{base}/SHORT", json={"value": "abc"})
    assert "masked" in error_of(short)["message"]
    assert (await api.get(f"{base}/NOT_SET")).status_code == 404
    assert (await api.get("/api/projects/nope/variables")).status_code == 404
    api.assert_never_sent(VALUE)


async def test_hostile_bodies_never_5xx(api: Api) -> None:
    s = await api.seed(hosts=1)
    url = f"/api/projects/{s['project']}/variables/FUZZ"
    rng = random.Random(7)
    for body in [*mutations({"value": VALUE}, rng, 60), *WEIRD]:
        r = await api.raw("PUT", url, json.dumps(body, allow_nan=True).encode())
        assert r.status_code in (200, 400, 422), (body, r.status_code, r.text)
    for raw in RAW:
        r = await api.raw("PUT", url, raw)
        assert r.status_code in (400, 422), (raw, r.text)
    for name in ["%00", "..", "A%2FB", "%E2%80%AE", "A" * 300, "-x"]:
        r = await api.client.put(f"/api/projects/{s['project']}/variables/{name}", json={"value": VALUE})
        assert r.status_code in (404, 405, 422), (name, r.text)  # ".." resolves to the project


async def test_a_project_holds_at_most_the_limit(api: Api) -> None:
    s = await api.seed(hosts=1)
    base = f"/api/projects/{s['project']}/variables"
    for i in range(MAX_VARIABLES):
        await api.ok("PUT", f"{base}/V{i}", {"value": f"value-{i}"})
    over = await api.client.put(f"{base}/ONE_MORE", json={"value": VALUE})
    assert over.status_code == 409 and error_of(over)["field"] == "name"
    await api.ok("PUT", f"{base}/V0", {"value": VALUE})  # replacing one is still fine
    doc = await api.ok("GET", "/api/openapi.json")
    put = doc["paths"]["/api/projects/{project}/variables/{name}"]["put"]
    assert {p["name"]: p["schema"].get("pattern") for p in put["parameters"] if p["in"] == "path"}["name"]
    assert json.dumps(doc).count("VariableIn") >= 2
