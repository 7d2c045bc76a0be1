"""Keys at rest: rotation on a running system, the placeholder refused, private files, no secret in a repr."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from ferry.db.engine import make_engine, session_factory
from ferry.db.models import Credential, Webhook
from ferry.infra.secrets import KEY_FILE, SecretBox, SecretKeyError, secure_home
from ferry.infra.settings import Settings
from ferry.local.natsserver import NatsServer, free_port
from tests.e2e.test_pipeline import register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System, start_system


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsServer) -> Iterator[System]:
    s = start_system(tmp_path / "home", nats_url=nats_server.url, agents=1)
    try:
        yield s
    finally:
        s.api.close()
        s.launcher.stop()


def _stored_secrets(db_url: str) -> list[bytes]:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(Credential.secret)))
            rows += [s for s in session.scalars(select(Webhook.secret)) if s is not None]
            return rows
    finally:
        engine.dispose()


@pytest.mark.sshd
def test_rotate_then_release_with_every_credential(system: System, sshd_hosts: Any, tmp_path: Path) -> None:
    sample = make_sample_repo(tmp_path / "sample")
    sample.commit("A")
    register(system, sshd_hosts(2), sample.url, app_port=free_port())
    system.post(
        "/api/webhooks",
        {"name": "chat", "url": "http://127.0.0.1:9/hook", "kind": "generic", "secret": "hmac-secret-123"},
        201,
    )
    key_file = system.settings.home / KEY_FILE
    (old_key,) = key_file.read_bytes().split()
    stored = _stored_secrets(system.settings.db_url)
    assert len(stored) == 3  # two deploy keys and the webhook secret

    env = {
        **os.environ,
        "FERRY_HOME": str(system.settings.home),
        "FERRY_DATABASE_URL": system.settings.db_url,
    }
    env.pop("FERRY_SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", "from ferry.cli.main import main; main()", "secrets", "rotate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 3 secrets" in done.stdout

    (new_key,) = key_file.read_bytes().split()
    assert new_key != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    old_box, new_box = SecretBox(old_key), SecretBox(new_key)
    for token in _stored_secrets(system.settings.db_url):
        with pytest.raises(SecretKeyError):
            old_box.decrypt(token)
        assert new_box.decrypt(token)

    # The running services follow the key file: the release decrypts both hosts' keys.
    rid = system.release("web", "prod", "main")
    done_release = system.wait(rid)
    assert done_release["status"] == "succeeded", system.logs()


def test_the_placeholder_key_is_refused(tmp_path: Path) -> None:
    for value in ("change-me-to-a-fernet-key", "short"):
        settings = Settings(home=tmp_path / "home", secret_key=value)
        with pytest.raises(SecretKeyError, match="FERRY_SECRET_KEY"):
            SecretBox.from_settings(settings)
    key = Fernet.generate_key().decode()
    assert SecretBox.from_settings(Settings(home=tmp_path / "home", secret_key=key))


def test_env_rotation_needs_the_previous_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox(old).encrypt("s3cret")
    both = SecretBox.from_settings(Settings(home=tmp_path / "h", secret_key=new, previous_secret_key=old))
    rotated = both.rotate(token)
    assert SecretBox(new).decrypt(rotated) == "s3cret"
    with pytest.raises(SecretKeyError):
        SecretBox(old).decrypt(rotated)


def test_home_is_private_and_loose_files_are_tightened(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    secure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    (loose / KEY_FILE).write_bytes(Fernet.generate_key() + b"\n")
    (loose / KEY_FILE).chmod(0o644)
    (loose / "ferry.db").write_bytes(b"")
    (loose / "ferry.db").chmod(0o664)
    fixed = secure_home(loose)
    assert len(fixed) == 3
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert stat.S_IMODE((loose / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((loose / "ferry.db").stat().st_mode) == 0o600


def test_no_secret_in_a_repr(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(
        home=tmp_path,
        secret_key=key,
        previous_secret_key="old-passphrase-long-enough",
        bootstrap_token="fry_bootstrap-token-value",
        database_url="postgresql://ferry:db-password@127.0.0.1/ferry",
    )
    shown = repr(settings) + str(settings) + repr(SecretBox(key))
    for secret in (key, "old-passphrase-long-enough", "fry_bootstrap-token-value", "db-password"):
        assert secret not in shown
