"""Configuration an unfinished release uses is not deleted (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from ferry.db import repo
from ferry.db.models import Release, ReleaseHost
from ferry.domain.errors import Conflict
from ferry.infra.secrets import SecretBox


def _release(s, rid: str, status: str, host: str) -> None:  # type: ignore[no-untyped-def]
    s.add(
        Release(
            id=rid,
            project="shop",
            environment="prod",
            ref="main",
            status=status,
            requested_by="alice",
            requested_at=datetime(2026, 1, 1, tzinfo=UTC),
            last_version=1,
            last_seq=1,
        )
    )
    s.flush()
    s.add(ReleaseHost(release_id=rid, host=host, position=0, status="waiting"))


@pytest.fixture
def seeded(session_factory):  # type: ignore[no-untyped-def]
    box = SecretBox(Fernet.generate_key())
    with session_factory() as s, s.begin():
        repo.create_credential(s, box, "ssh-web", "password", "pw")
        repo.create_credential(s, box, "git", "password", "pw")
        repo.create_host(s, "web1", "127.0.0.1", "root", credential="ssh-web")
        repo.create_project(
            s, "shop", "https://example.com/shop.git", {"deploy_path": "/srv/shop"}, repo_credential="git"
        )
        repo.create_environment(s, "shop", "prod", hosts=["web1"])
    return session_factory


@pytest.mark.parametrize(
    "delete",
    [
        lambda s: repo.delete_project(s, "shop"),
        lambda s: repo.delete_environment(s, "shop", "prod"),
        lambda s: repo.delete_credential(s, "git"),
        lambda s: repo.delete_credential(s, "ssh-web"),
    ],
    ids=["project", "environment", "repo-credential", "host-credential"],
)
def test_configuration_of_a_running_release_is_kept(seeded, delete) -> None:  # type: ignore[no-untyped-def]
    with seeded() as s, s.begin():
        _release(s, "r-run", "deploying", "web1")
        _release(s, "r-old", "succeeded", "web1")
    with seeded() as s, s.begin(), pytest.raises(Conflict, match="unfinished release r-run"):
        delete(s)


def test_a_host_of_a_running_release_is_kept_and_freed_when_it_ends(seeded) -> None:  # type: ignore[no-untyped-def]
    with seeded() as s, s.begin():
        _release(s, "r-run", "queued", "web1")
        repo.update_environment(s, "shop", "prod", hosts=[])
    with (
        seeded() as s,
        s.begin(),
        pytest.raises(Conflict, match="host 'web1' is used by unfinished release r-run"),
    ):
        repo.delete_host(s, "web1")
    with seeded() as s, s.begin():
        s.get(Release, "r-run").status = "cancelled"  # type: ignore[union-attr]
    with seeded() as s, s.begin():
        repo.delete_host(s, "web1")
        repo.delete_project(s, "shop")
