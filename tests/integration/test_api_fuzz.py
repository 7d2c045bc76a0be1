"""Malformed bodies to every POST/PATCH endpoint never get a 5xx (the ASGI transport re-raises crashes)."""

# ruff: noqa: F401, F811  (the `api` fixture is imported by name)
from __future__ import annotations

import json
import random
from typing import Any

from tests.integration.api_harness import Api, api, error_of, project_body

WEIRD: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    float("inf"),
    "",
    " ",
    "-",
    "--upload-pack=x",
    "../../x",
    "\x00",
    "\u202e",
    "a" * 5000,
    [],
    [None],
    {},
    {"a": {"b": [1]}},
    ["--x", ".."],
    "/",
    "ext::sh",
]
RAW = [b"", b"{", b"}", b"null", b"[]", b"1", b'"x"', b"\xff", b'{"a":', b'{"name": NaN}', b"[" * 5000]


def mutations(valid: dict[str, Any], rng: random.Random, n: int) -> list[Any]:
    out: list[Any] = [{}, [valid], {k: None for k in valid}]
    keys = list(valid)
    for _ in range(n):
        body = dict(valid)
        for key in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            if rng.random() < 0.2:
                body.pop(key, None)
            else:
                body[key] = rng.choice(WEIRD)
        if rng.random() < 0.1:
            body[rng.choice(["zzz", "__proto__", "id"])] = 1
        out.append(body)
    return out


async def test_post_and_patch_bodies_never_5xx(api: Api) -> None:
    s = await api.seed(hosts=1, require_approval=True)
    rid = (
        await api.ok(
            "POST", "/api/releases", {"project": s["project"], "environment": "prod", "ref": "main"}, 202
        )
    )["id"]
    targets: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/credentials", {"name": "c", "kind": "ssh_key", "secret": s["secret"]}),
        (
            "POST",
            "/api/hosts",
            {
                "name": "h",
                "address": "10.0.0.9",
                "credential": s["credential"],
                "host_key_policy": "tofu",
                "port": 22,
            },
        ),
        ("PATCH", f"/api/hosts/{s['hosts'][0]}", {"port": 2222, "user": "deploy", "host_key": None}),
        ("POST", "/api/projects", project_body("fz")),
        ("PATCH", f"/api/projects/{s['project']}", {"keep_releases": 2, "deploy_path": "/srv/x"}),
        ("POST", f"/api/projects/{s['project']}/environments", {"name": "qa", "hosts": s["hosts"]}),
        ("PATCH", f"/api/projects/{s['project']}/environments/prod", {"hosts": s["hosts"], "concurrency": 1}),
        ("POST", "/api/releases", {"project": s["project"], "environment": "prod", "ref": "main"}),
        ("POST", f"/api/releases/{rid}/reject", {"reason": "no"}),
        ("POST", f"/api/releases/{rid}/cancel", {"reason": "no"}),
    ]
    rng = random.Random(1234)
    sent = 0
    for method, path, valid in targets:
        for body in mutations(valid, rng, 30):
            content = json.dumps(body, allow_nan=True).encode()
            r = await api.raw(method, path, content)
            assert r.status_code < 500, (method, path, body, r.text)
            if r.status_code >= 400:
                error_of(r)
            sent += 1
        for content in RAW:
            r = await api.raw(method, path, content)
            assert r.status_code < 500, (method, path, content, r.text)
            if r.status_code >= 400:
                error_of(r)
            sent += 1
    assert sent > 300
    api.assert_never_sent(s["secret"])


async def test_unknown_routes_and_methods_are_json_errors(api: Api) -> None:
    r = await api.get("/api/nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND"
    r = await api.client.put("/api/credentials")
    assert r.status_code == 405 and error_of(r)["code"] == "METHOD_NOT_ALLOWED"
