"""SecretBox: Fernet round trips, passphrase keys, the 0600 key file, wrong keys, no leaks in repr."""

from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from ferry.domain.errors import FerryError
from ferry.infra.secrets import KEY_FILE, SecretBox, SecretKeyError, load_or_create_key_file
from ferry.infra.settings import Settings


def test_round_trip_with_a_fernet_key():
    box = SecretBox(Fernet.generate_key())
    token = box.encrypt("s3cret pässword")
    assert b"s3cret" not in token
    assert box.decrypt(token) == "s3cret pässword"
    assert box.encrypt("x") != box.encrypt("x")  # random IV per token


def test_passphrase_derives_a_stable_key():
    token = SecretBox("correct horse battery staple").encrypt("hello")
    assert SecretBox("correct horse battery staple").decrypt(token) == "hello"


def test_wrong_key_raises_a_clear_ferry_error():
    token = SecretBox("one passphrase").encrypt("hello")
    with pytest.raises(SecretKeyError) as info:
        SecretBox("another passphrase").decrypt(token)
    assert isinstance(info.value, FerryError)
    assert info.value.field == "secret_key"
    assert "FERRY_SECRET_KEY" in str(info.value)
    with pytest.raises(SecretKeyError):
        SecretBox(Fernet.generate_key()).decrypt(b"not a token")


def test_key_file_is_created_0600_and_reused(tmp_path):
    settings = Settings(home=tmp_path / "home")
    box = SecretBox.from_settings(settings)
    path = settings.home / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = box.encrypt("kept")
    assert SecretBox.from_settings(settings).decrypt(token) == "kept"  # same file, same key
    assert load_or_create_key_file(path) == path.read_bytes().strip()


def test_corrupt_key_file_is_refused(tmp_path):
    path = tmp_path / KEY_FILE
    path.write_text("not a key\n")
    with pytest.raises(SecretKeyError):
        load_or_create_key_file(path)


def test_env_key_wins_over_the_key_file(tmp_path, monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.setenv("FERRY_SECRET_KEY", key)
    token = SecretBox.from_env().encrypt("x")
    assert not (tmp_path / KEY_FILE).exists()
    assert SecretBox(key).decrypt(token) == "x"


def test_secrets_never_appear_in_repr():
    key = Fernet.generate_key()
    box = SecretBox(key)
    for text in (repr(box), str(box), repr(vars(box))):
        assert key.decode() not in text
    assert "hidden" in repr(box)
