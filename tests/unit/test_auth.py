"""``ferry.domain.auth``: token format and hashing, the auth switch, and which role each request needs."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ferry.domain import auth
from services.gateway.auth import safe_next


def test_new_token_is_prefixed_32_random_bytes() -> None:
    token = auth.new_token()
    assert token.startswith("fry_")
    raw = base64.urlsafe_b64decode(token[4:] + "=" * (-len(token[4:]) % 4))
    assert len(raw) == 32
    assert auth.plausible_token(token)
    assert len({auth.new_token() for _ in range(100)}) == 100


def test_hash_is_sha256_hex_and_comparison_is_exact() -> None:
    token = auth.new_token()
    digest = auth.hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() and len(digest) == 64
    assert auth.same_hash(digest, auth.hash_token(token))
    assert not auth.same_hash(digest, auth.hash_token(token + "x"))
    assert not auth.same_hash(digest, "")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer fry_abc", "fry_abc"),
        ("bearer   fry_abc  ", "fry_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert auth.bearer(header) == token


@pytest.mark.parametrize(
    "token", ["short", "x" * 300, "fry_" + "é" * 20, "fry_abc def ghi jkl", "fry_\x00" * 5]
)
def test_implausible_tokens_are_refused_before_any_lookup(token: str) -> None:
    assert not auth.plausible_token(token)


@pytest.mark.parametrize(
    ("mode", "host", "required"),
    [
        (None, "127.0.0.1", False),
        (None, "localhost", False),
        (None, "::1", False),
        (None, "[::1]", False),
        (None, "127.0.0.5", False),
        (None, "0.0.0.0", True),
        (None, "::", True),
        (None, "10.1.2.3", True),
        (None, "ferry.example.com", True),
        ("token", "127.0.0.1", True),
        ("off", "0.0.0.0", False),
    ],
)
def test_auth_is_off_by_default_only_on_loopback(mode: str | None, host: str, required: bool) -> None:
    assert auth.auth_required(mode, host) is required


def test_unknown_auth_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="FERRY_AUTH"):
        auth.auth_required("yes", "0.0.0.0")


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/openapi.json", None),
        ("GET", "/projects", "viewer"),
        ("GET", "/releases/r1/events", "viewer"),
        ("GET", "/projects/shop/refs", "viewer"),
        ("GET", "/credentials", "viewer"),
        ("POST", "/releases", "deployer"),
        ("POST", "/releases/r1/approve", "deployer"),
        ("POST", "/releases/r1/reject", "deployer"),
        ("POST", "/releases/r1/cancel", "deployer"),
        ("POST", "/releases/r1/rollback", "deployer"),
        ("POST", "/releases/r1/resume", "deployer"),
        ("POST", "/releases/r1/other", "admin"),
        ("POST", "/projects", "admin"),
        ("PATCH", "/projects/shop", "admin"),
        ("DELETE", "/hosts/web1", "admin"),
        ("POST", "/credentials", "admin"),
        ("POST", "/projects/shop/environments", "admin"),
        ("POST", "/openapi.json", "admin"),
        # Readable by admins only: tokens, and webhooks (a Slack URL is itself a secret).
        ("GET", "/tokens", "admin"),
        ("GET", "/tokens/ci", "admin"),
        ("GET", "/webhooks", "admin"),
        ("GET", "/webhooks/chat/deliveries", "admin"),
        ("GET", "/tokensfoo", "viewer"),
    ],
)
def test_required_role(method: str, path: str, role: str | None) -> None:
    assert auth.required_role(method, path) == role


def test_roles_are_ordered() -> None:
    assert auth.allows("viewer", "viewer") and not auth.allows("viewer", "deployer")
    assert auth.allows("deployer", "deployer") and not auth.allows("deployer", "admin")
    assert all(auth.allows("admin", r) for r in auth.ROLES)
    assert auth.allows("anything", None)
    assert not auth.allows("root", "viewer")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/releases/r1?x=1", "/releases/r1?x=1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("relative", "/"),
    ],
)
def test_login_next_is_a_local_path(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
