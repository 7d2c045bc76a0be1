"""The portal's cookie on a gateway with auth on: same-origin requests only, login and logout."""

# ruff: noqa: F401, F811  (the `secured` fixture is imported by name)

from __future__ import annotations

from ferry.domain import auth
from tests.integration.api_harness import error_of
from tests.integration.auth_harness import ORIGIN, Secured, release_body, secured


# --- the portal's cookie ---------------------------------------------------------------
async def test_cookie_requests_must_come_from_the_portal_itself(secured: Secured) -> None:
    seeded = await secured.admin.seed(hosts=1)
    token = await secured.token("browser", "deployer")
    cookies = {auth.COOKIE_NAME: token}
    client = secured.anon
    client.cookies.update(cookies)
    try:
        assert (await client.get("/api/projects")).status_code == 200  # reads need no Origin
        for headers in (
            {},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://ferry.test.evil.example"},
            {"Referer": "http://evil.example/ferry.test"},
        ):
            r = await client.post("/api/releases", json=release_body(seeded), headers=headers)
            assert r.status_code == 403, (headers, r.text)
            err = error_of(r)
            assert err["code"] in ("FORBIDDEN", "FOREIGN_ORIGIN") and err["field"] == "origin"
        r = await client.post("/api/releases", json=release_body(seeded), headers={"Origin": ORIGIN})
        assert r.status_code == 202, r.text
        r = await client.post(
            "/api/releases", json=release_body(seeded), headers={"Referer": f"{ORIGIN}/projects/x/release"}
        )
        assert r.status_code == 202, r.text
        # A bearer token is exempt: no browser attaches it by itself.
        client.cookies.clear()
        r = await client.post(
            "/api/releases",
            json=release_body(seeded),
            headers={**secured.as_(token), "Origin": "http://evil.example"},
        )
        assert r.status_code == 202, r.text
    finally:
        client.cookies.clear()


async def test_portal_login_and_logout(secured: Secured) -> None:
    client = secured.anon
    r = await client.get("/projects/shop?tab=1")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/projects/shop%3Ftab%3D1"
    assert (await client.get("/static/portal.css")).status_code == 200
    page = await client.get("/login?next=//evil.example/")
    assert page.status_code == 200 and 'name="next" value="/"' in page.text

    token = await secured.token("alice", "viewer")
    form = {"token": "fry_wrong-wrong-wrong-wrong", "next": "/"}
    r = await client.post("/login", data=form, headers={"Origin": ORIGIN})
    assert r.status_code == 401 and "unknown or revoked" in r.text and "set-cookie" not in r.headers
    r = await client.post(
        "/login", data={"token": token, "next": "/"}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers

    r = await client.post(
        "/login", data={"token": token, "next": "https://evil.example/"}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    try:
        home = await client.get("/")
        assert home.status_code == 200 and 'id="account-name">alice</strong> (viewer)' in home.text
        r = await client.post("/logout", headers={"Origin": ORIGIN})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert 'ferry_token=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    finally:
        client.cookies.clear()
    assert (await client.get("/")).status_code == 303
