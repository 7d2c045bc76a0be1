"""Repository credentials for https remotes (issue 9, item 6), end to end through the API.

A real gateway (nats-server, SQLite/PostgreSQL), the builder's refs handler with the real
``CredentialReader`` over the same database, and ``git http-backend`` behind HTTPS with Basic
auth on loopback: the token stored with ``POST /api/credentials`` (kind ``password``) opens the
repository, and is never in a response, a request path or the mirror; an SSH key named for an
https remote is refused before anything is sent to the server.
"""

# ruff: noqa: F401, F811  (the `api` and `git_repos` fixtures are imported by name)
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ferry.infra.credentials import CredentialReader
from services.builder.mirror import MirrorCache
from services.builder.worker import BuilderDeps, list_refs
from tests.harness.githttp import GitHttpServer, git_http_server
from tests.harness.gitrepo import GitRepoFactory, Repo, git_repos
from tests.integration.api_harness import Api, api, error_of, project_body, ssh_keypair

TOKEN = "glpat-Xq7rS3cr3tT0k3n"  # noqa: S105


@pytest.fixture
def repo(git_repos: GitRepoFactory) -> Repo:
    return git_repos.create("app", {"README.md": "hello\n"})


@pytest.fixture
def server(tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttpServer]:
    certs = tmp_path / "certs"
    certs.mkdir()
    with git_http_server(repo.path.parent, certs, "deploy", TOKEN) as server:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))  # the operator trusts the forge's CA
        yield server


@pytest.fixture
async def builder(api: Api, tmp_path: Path) -> AsyncIterator[MirrorCache]:
    """The builder's refs handler on the gateway's NATS, reading credentials from the same database."""
    creds = CredentialReader(api.gw.settings)
    mirrors = MirrorCache(tmp_path / "mirrors")
    deps = BuilderDeps(
        bus=api.gw.bus,
        mirrors=mirrors,
        builds=None,  # type: ignore[arg-type]  # list_refs needs no build cache
        workdir=tmp_path / "work",
        secret=creds.secret,
    )

    async def handler(msg) -> None:  # type: ignore[no-untyped-def]
        await list_refs(msg, deps)

    sub = await api.gw.bus.nc.subscribe("ferry.builder.refs", cb=handler)
    try:
        yield mirrors
    finally:
        await sub.unsubscribe()
        creds.close()


async def test_an_https_token_credential_opens_an_https_repository(
    api: Api, builder: MirrorCache, server: GitHttpServer, repo: Repo
) -> None:
    r = await api.post(
        "/api/projects", project_body("leaky", repo_url=server.url("app").replace("//", f"//deploy:{TOKEN}@"))
    )
    assert r.status_code == 422 and "kind 'password'" in error_of(r)["message"], r.text
    cred = {"name": "forge-token", "kind": "password", "secret": f"deploy:{TOKEN}"}
    await api.ok("POST", "/api/credentials", cred, 201)
    body = project_body("app", repo_url=server.url("app"), repo_credential="forge-token")
    await api.ok("POST", "/api/projects", body, 201)

    refs = await api.ok("GET", "/api/projects/app/refs")
    assert [(b["name"], b["commit"]) for b in refs["branches"]] == [("main", repo.head)]

    api.assert_never_sent(TOKEN)
    assert server.seen and all(TOKEN not in seen.path for seen in server.seen)
    for path in builder.root.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes()


async def test_an_ssh_key_is_never_sent_to_an_https_remote(
    api: Api, builder: MirrorCache, server: GitHttpServer
) -> None:
    private, _ = ssh_keypair()
    await api.ok(
        "POST", "/api/credentials", {"name": "deploy-key", "kind": "ssh_key", "secret": private}, 201
    )
    body = project_body("app", repo_url=server.url("app"), repo_credential="deploy-key")
    await api.ok("POST", "/api/projects", body, 201)
    r = await api.get("/api/projects/app/refs")
    assert r.status_code == 422, r.text
    assert "https token (kind 'password')" in error_of(r)["message"]
    assert server.seen == []  # refused before git ran
