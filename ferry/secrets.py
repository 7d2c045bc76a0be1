"""Secrets at rest: Fernet encryption with a key from FERRY_SECRET_KEY or a 0600 key file.

``FERRY_SECRET_KEY`` may be a Fernet key or any passphrase (stretched with scrypt);
without it, ``FERRY_HOME/secret.key`` is created on first use, readable by its owner only.
Losing the key makes stored credentials unreadable: back it up with the database.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ferry.errors import FerryError
from ferry.settings import Settings

KEY_FILE = "secret.key"
# A fixed salt: the passphrase alone must yield the same key on every machine and restart.
_SALT = b"ferry/secret-box/v1"


class SecretKeyError(FerryError):
    """A secret cannot be decrypted with this key (wrong FERRY_SECRET_KEY or key file), or no key."""

    code = "SECRET_KEY"


def _as_fernet_key(value: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        return None
    return value.encode() if len(raw) == 32 else None


@functools.lru_cache(maxsize=8)
def derive_key(passphrase: str) -> bytes:
    """A Fernet key from a passphrase (scrypt; deliberately slow, so cached)."""
    kdf = Scrypt(salt=_SALT, length=32, n=2**15, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode()))


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, or create it with a fresh key (mode 0600) if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text().strip()
        if _as_fernet_key(text) is None:
            raise SecretKeyError(f"{path} does not hold a Fernet key", field="secret_key") from None
        return text.encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


class SecretBox:
    """Encrypts and decrypts secrets; never shows its key."""

    def __init__(self, key: bytes | str) -> None:
        text = key.decode() if isinstance(key, bytes) else key
        fernet_key = _as_fernet_key(text)
        self._fernet = Fernet(fernet_key if fernet_key is not None else derive_key(text))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for FERRY_SECRET_KEY, else for the key file under FERRY_HOME."""
        if settings.secret_key:
            return cls(settings.secret_key)
        return cls(load_or_create_key_file(settings.home / KEY_FILE))

    @classmethod
    def from_env(cls) -> SecretBox:
        return cls.from_settings(Settings.from_env())

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretKeyError(
                "cannot decrypt a stored secret: FERRY_SECRET_KEY (or FERRY_HOME/secret.key) is not the "
                "key it was encrypted with",
                field="secret_key",
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(key=<hidden>)"

    __str__ = __repr__
