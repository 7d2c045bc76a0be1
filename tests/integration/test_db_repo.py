"""Configuration CRUD and release queries on SQLite and PostgreSQL (one contract, two backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from ferry.db import repo
from ferry.db.models import Credential
from ferry.domain.errors import Conflict, HostKeyMismatch, HostKeyUnknown, InvalidInput, NotFound
from ferry.domain.events import Plan, Recipe
from ferry.infra.secrets import SecretBox


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def test_credentials_are_encrypted_and_only_load_secret_reveals_them(session_factory, box, private_key):
    with session_factory() as s, s.begin():
        info = repo.create_credential(s, box, "deploy-key", "ssh_key", private_key)
        repo.create_credential(s, box, "git-pass", "password", "hunter2")
    assert info.summary.startswith("ssh-ed25519 SHA256:")
    with session_factory() as s:
        listed = repo.list_credentials(s)
        assert [c.name for c in listed] == ["deploy-key", "git-pass"]
        for view in (*listed, repo.get_credential(s, "deploy-key")):
            assert "PRIVATE KEY" not in repr(view) and "hunter2" not in repr(view)
            assert not hasattr(view, "secret")
        stored = s.scalar(select(Credential.secret).where(Credential.name == "git-pass"))
        assert b"hunter2" not in stored
        assert "hunter2" not in repr(s.scalar(select(Credential).where(Credential.name == "git-pass")))
        assert repo.load_secret(s, box, "deploy-key") == private_key
        assert repo.load_secret(s, box, "git-pass") == "hunter2"
        with pytest.raises(NotFound) as nf:
            repo.load_secret(s, box, "nope")
        assert nf.value.field == "credential"


def test_sqlite_file_never_holds_a_private_key_in_clear(tmp_path: Path, box, private_key):
    from ferry.db.engine import make_engine, session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'ferry.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s, s.begin():
            repo.create_credential(s, box, "k", "ssh_key", private_key)
    finally:
        engine.dispose()  # checkpoints the WAL into the main file
    files = [p for p in tmp_path.iterdir() if p.name.startswith("ferry.db")]
    body = private_key.splitlines()[1].encode()  # the key material itself, not its armour
    for f in files:
        data = f.read_bytes()
        assert body not in data and b"OPENSSH PRIVATE KEY" not in data, f.name
    with session_factory(make_engine(url))() as s:
        assert repo.load_secret(s, box, "k") == private_key


def test_bad_credentials_are_refused(session_factory, box):
    with session_factory() as s:
        with pytest.raises(InvalidInput) as e1:
            repo.create_credential(s, box, "k", "ssh_key", "not a key")
        assert e1.value.field == "secret"
        with pytest.raises(InvalidInput) as e2:
            repo.create_credential(s, box, "k", "token", "x")
        assert e2.value.field == "kind"
        with pytest.raises(InvalidInput) as e3:
            repo.create_credential(s, box, "bad name", "password", "x")
        assert e3.value.field == "name"


def test_unique_names_conflict_with_the_field(session_factory, box):
    with session_factory() as s, s.begin():
        repo.create_credential(s, box, "c", "password", "pw")
        repo.create_host(s, "web1", "127.0.0.2", "deploy")
        repo.create_project(s, "shop", "file:///r", {"deploy_path": "/srv/shop"})
        repo.create_environment(s, "shop", "prod", hosts=["web1"])
    with session_factory() as s, s.begin():
        attempts = [
            lambda: repo.create_credential(s, box, "c", "password", "pw"),
            lambda: repo.create_host(s, "web1", "127.0.0.3", "deploy"),
            lambda: repo.create_project(s, "shop", "file:///r2", {"deploy_path": "/srv/x"}),
            lambda: repo.create_environment(s, "shop", "prod"),
        ]
        for attempt in attempts:
            with pytest.raises(Conflict) as info:
                attempt()
            assert info.value.field == "name"
            assert "already" in info.value.message
        # a failed write rolls back only itself: the transaction goes on
        repo.create_host(s, "web2", "127.0.0.3", "deploy")
        repo.update_host(s, "web2", new_name="web3")
        with pytest.raises(Conflict) as info:
            repo.update_host(s, "web3", new_name="web1")
        assert info.value.field == "name"
    with session_factory() as s:
        assert [h.name for h in repo.list_hosts(s)] == ["web1", "web3"]


def test_unknown_names_raise_not_found_with_the_field(session_factory, box):
    with session_factory() as s:
        cases = [
            (lambda: repo.get_host(s, "ghost"), "name"),
            (lambda: repo.get_credential(s, "ghost"), "name"),
            (lambda: repo.get_project(s, "ghost"), "name"),
            (lambda: repo.get_environment(s, "ghost", "prod"), "project"),
            (lambda: repo.create_host(s, "h", "127.0.0.2", "u", credential="ghost"), "credential"),
            (lambda: repo.create_environment(s, "ghost", "prod"), "project"),
            (lambda: repo.get_release(s, "r-ghost"), "release_id"),
            (lambda: repo.record_host_key(s, "ghost", "k"), "host"),
        ]
        for call, field in cases:
            with pytest.raises(NotFound) as info:
                call()
            assert info.value.field == field, info.value.message
        repo.create_project(s, "shop", "file:///r", {"deploy_path": "/srv/shop"})
        with pytest.raises(NotFound) as info:
            repo.get_environment(s, "shop", "prod")
        assert info.value.field == "name"
        with pytest.raises(NotFound) as info:
            repo.create_environment(s, "shop", "prod", hosts=["ghost"])
        assert info.value.field == "hosts"


def test_environment_host_order_is_preserved(session_factory):
    names = ["web5", "web1", "web4", "web2", "web3"]
    with session_factory() as s, s.begin():
        for i, n in enumerate(sorted(names)):
            repo.create_host(s, n, f"127.0.0.{i + 2}", "deploy")
        repo.create_project(s, "shop", "file:///r", {"deploy_path": "/srv/shop"})
        env = repo.create_environment(s, "shop", "prod", hosts=names, concurrency=2, max_failures=1)
        assert env.hosts == tuple(names)
    with session_factory() as s:
        assert repo.get_environment(s, "shop", "prod").hosts == tuple(names)
    reordered = ["web3", "web5", "web2"]
    with session_factory() as s, s.begin():
        assert repo.update_environment(s, "shop", "prod", hosts=reordered).hosts == tuple(reordered)
    with session_factory() as s:
        env = repo.get_environment(s, "shop", "prod")
        assert env.hosts == tuple(reordered)
        assert (env.concurrency, env.max_failures) == (2, 1)
        with pytest.raises(InvalidInput) as info:
            repo.update_environment(s, "shop", "prod", hosts=["web1", "web1"])
        assert info.value.field == "hosts"


def test_project_config_is_a_recipe_and_environments_make_plans(session_factory, box):
    config = {
        "deploy_path": "/srv/shop",
        "build_hooks": ["make build"],
        "restart": "systemctl --user restart shop",
        "health": {"kind": "http", "target": "http://127.0.0.1:8080/health"},
    }
    with session_factory() as s, s.begin():
        repo.create_credential(s, box, "git", "password", "pw")
        repo.create_host(s, "web1", "127.0.0.2", "deploy")
        project = repo.create_project(s, "shop", "ssh://git@example/shop.git", config, repo_credential="git")
        repo.create_environment(s, "shop", "prod", hosts=["web1"], require_approval=True)
    assert project.repo_credential == "git"
    with session_factory() as s:
        plan = repo.environment_plan(s, "shop", "prod")
        assert plan == Plan(
            recipe=Recipe(repo_url="ssh://git@example/shop.git", repo_credential="git", **config),
            hosts=("web1",),
            require_approval=True,
        )
        with pytest.raises(InvalidInput) as info:
            repo.create_project(s, "bad", "file:///r", {"deploy_path": "/x", "keep_releases": "many"})
        assert info.value.field == "config.keep_releases"
        with pytest.raises(InvalidInput) as info:
            repo.create_project(s, "bad", "file:///r", {})
        assert info.value.field == "config.deploy_path"
        with pytest.raises(InvalidInput) as info:
            repo.create_project(s, "bad", "file:///r", {"deploy_path": "/x", "repo_url": "file:///y"})
        assert info.value.field == "config"


def test_in_use_rows_cannot_be_deleted(session_factory, box):
    with session_factory() as s, s.begin():
        repo.create_credential(s, box, "c", "password", "pw")
        repo.create_host(s, "web1", "127.0.0.2", "deploy", credential="c")
        repo.create_project(s, "shop", "file:///r", {"deploy_path": "/srv/shop"})
        repo.create_environment(s, "shop", "prod", hosts=["web1"])
    with session_factory() as s, s.begin():
        with pytest.raises(Conflict) as info:
            repo.delete_credential(s, "c")
        assert "web1" in info.value.message
        with pytest.raises(Conflict) as info:
            repo.delete_host(s, "web1")
        assert "shop/prod" in info.value.message
        repo.delete_project(s, "shop")  # cascades to its environments
        repo.delete_host(s, "web1")
        repo.delete_credential(s, "c")
    with session_factory() as s:
        assert repo.list_hosts(s) == [] and repo.list_projects(s) == [] and repo.list_credentials(s) == []


def test_host_keys_trust_on_first_use_only_when_chosen(session_factory):
    with session_factory() as s, s.begin():
        repo.create_host(s, "pinned", "127.0.0.2", "deploy")
        repo.create_host(s, "tofu", "127.0.0.3", "deploy", host_key_policy="tofu")
        with pytest.raises(InvalidInput) as info:
            repo.create_host(s, "x", "127.0.0.4", "deploy", host_key_policy="yolo")
        assert info.value.field == "host_key_policy"
    with session_factory() as s, s.begin():
        with pytest.raises(HostKeyUnknown):
            repo.record_host_key(s, "pinned", "ssh-ed25519 AAAA1")
        assert repo.record_host_key(s, "tofu", "ssh-ed25519 AAAA1").host_key == "ssh-ed25519 AAAA1"
        assert repo.record_host_key(s, "tofu", "ssh-ed25519 AAAA1").host_key == "ssh-ed25519 AAAA1"
        with pytest.raises(HostKeyMismatch):
            repo.record_host_key(s, "tofu", "ssh-ed25519 OTHER")
        repo.update_host(s, "pinned", host_key="ssh-ed25519 BBBB")  # an admin pins it explicitly
    with session_factory() as s:
        assert repo.get_host(s, "tofu").host_key == "ssh-ed25519 AAAA1"
        assert repo.record_host_key(s, "pinned", "ssh-ed25519 BBBB").host_key == "ssh-ed25519 BBBB"
        with pytest.raises(HostKeyMismatch):
            repo.record_host_key(s, "pinned", "ssh-ed25519 AAAA1")


def test_updates_keep_what_is_not_given(session_factory, box):
    with session_factory() as s, s.begin():
        repo.create_credential(s, box, "c", "password", "pw")
        repo.create_host(s, "web1", "127.0.0.2", "deploy", port=2222, credential="c")
        repo.update_host(s, "web1", address="10.0.0.1")
        host = repo.get_host(s, "web1")
        assert (host.address, host.port, host.user, host.credential) == ("10.0.0.1", 2222, "deploy", "c")
        assert repo.update_host(s, "web1", credential=None).credential is None
        with pytest.raises(InvalidInput) as info:
            repo.update_host(s, "web1", port=70000)
        assert info.value.field == "port"
        repo.update_credential(s, box, "c", new_name="c2", secret="pw2")
        assert repo.load_secret(s, box, "c2") == "pw2"


def test_hosts_have_an_agent_group(session_factory):
    with session_factory() as s, s.begin():
        assert repo.create_host(s, "web1", "127.0.0.2", "deploy").agent_group == "default"
        assert repo.create_host(s, "web2", "127.0.0.3", "deploy", agent_group="eu-1").agent_group == "eu-1"
        assert repo.update_host(s, "web1", agent_group="dc_2").agent_group == "dc_2"
        assert repo.update_host(s, "web1", port=2222).agent_group == "dc_2"
        for bad in ("", "EU", "-eu", "eu.1", "a" * 51):
            with pytest.raises(InvalidInput) as info:
                repo.create_host(s, "web3", "127.0.0.4", "deploy", agent_group=bad)
            assert info.value.field == "agent_group"
            with pytest.raises(InvalidInput):
                repo.update_host(s, "web2", agent_group=bad)
    with session_factory() as s:
        assert repo.agent_group_of(s, "web1") == "dc_2"
        assert repo.agent_group_of(s, "web2") == "eu-1"
        assert repo.agent_group_of(s, "ghost") == "default"
