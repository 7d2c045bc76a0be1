"""Secrets at rest: Fernet encryption with a key from FERRY_SECRET_KEY or a 0600 key file.

``FERRY_SECRET_KEY`` may be a Fernet key or any passphrase (stretched with scrypt);
without it, ``FERRY_HOME/secret.key`` is created on first use, readable by its owner only.
Losing the key makes stored credentials unreadable: back it up with the database.

Rotation (``ferry secrets rotate``): the first key encrypts, every key decrypts (MultiFernet).
With the key file, rotation writes the new key above the old one, re-encrypts every stored
secret, then leaves only the new key; with ``FERRY_SECRET_KEY``, the old value goes to
``FERRY_PREVIOUS_SECRET_KEY`` until the rotation is done.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ferry.domain.errors import FerryError
from ferry.infra.settings import Settings

log = logging.getLogger("ferry.infra.secrets")

KEY_FILE = "secret.key"
# A fixed salt: the passphrase alone must yield the same key on every machine and restart.
_SALT = b"ferry/secret-box/v1"
# Values shipped in examples (deploy/systemd/ferry.env.example): never a real key.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "replace-me", "your-secret", "example-key")
MIN_PASSPHRASE = 16
PRIVATE_FILES = ("ferry.db", "ferry.db-wal", "ferry.db-shm", KEY_FILE)


class SecretKeyError(FerryError):
    """A secret cannot be decrypted with this key (wrong FERRY_SECRET_KEY or key file), or no key."""

    code = "SECRET_KEY"


def _as_fernet_key(value: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        return None
    return value.encode() if len(raw) == 32 else None


def refuse_placeholder(value: str, name: str = "FERRY_SECRET_KEY") -> None:
    """SecretKeyError for an example value or a short passphrase: they protect nothing."""
    lowered = value.strip().lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise SecretKeyError(
            f"{name} is the placeholder from the example configuration; generate a key with "
            "`python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
            "(or unset it to use FERRY_HOME/secret.key)",
            field="secret_key",
        )
    if _as_fernet_key(value) is None and len(value) < MIN_PASSPHRASE:
        raise SecretKeyError(
            f"{name} is neither a Fernet key nor a passphrase of at least {MIN_PASSPHRASE} characters",
            field="secret_key",
        )


@functools.lru_cache(maxsize=8)
def derive_key(passphrase: str) -> bytes:
    """A Fernet key from a passphrase (scrypt; deliberately slow, so cached)."""
    kdf = Scrypt(salt=_SALT, length=32, n=2**15, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode()))


def _read_keys(path: Path) -> list[bytes]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines or any(_as_fernet_key(line) is None for line in lines):
        raise SecretKeyError(f"{path} does not hold Fernet keys (one a line)", field="secret_key")
    return [line.encode() for line in lines]


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file atomically (mode 0600): the first key encrypts, all decrypt."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"".join(k + b"\n" for k in keys))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_or_create_key_file(path: Path) -> bytes:
    """The key file's encrypting (first) key; see ``load_or_create_keys``."""
    return load_or_create_keys(path)[0]


def load_or_create_keys(path: Path) -> list[bytes]:
    """The key file's keys, or a fresh key written to a new file (mode 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_keys(path)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return [key]


def secure_home(home: Path) -> list[str]:
    """Create ``FERRY_HOME`` 0700; tighten it and its private files (key, SQLite) when looser.

    Returns what was tightened (also logged as warnings): another local user could otherwise
    read the key and the database, and with them every stored credential.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fixed = []
    for path, mode in [(home, 0o700), *((home / n, 0o600) for n in PRIVATE_FILES), (home / "nats", 0o700)]:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
            path.chmod(mode)
            fixed.append(str(path))
            log.warning(
                "tightened permissions: others could read it", extra={"path": str(path), "mode": oct(mode)}
            )
    return fixed


class SecretBox:
    """Encrypts with the first key, decrypts with any; never shows a key."""

    def __init__(self, key: bytes | str, *older: bytes | str, source: Path | None = None) -> None:
        self._fernet = MultiFernet([Fernet(self._fernet_key(k)) for k in (key, *older)])
        self._source = source
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        try:
            return self._source.stat().st_mtime_ns if self._source is not None else None
        except OSError:
            return None

    def _refresh(self) -> None:
        """Follow the key file: a running service picks up ``ferry secrets rotate`` by itself."""
        if self._source is None:
            return
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            keys = _read_keys(self._source)
            self._fernet = MultiFernet([Fernet(k) for k in keys])
            self._seen = stamp

    @staticmethod
    def _fernet_key(key: bytes | str) -> bytes:
        text = key.decode() if isinstance(key, bytes) else key
        fernet_key = _as_fernet_key(text)
        return fernet_key if fernet_key is not None else derive_key(text)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for FERRY_SECRET_KEY (and FERRY_PREVIOUS_SECRET_KEY), else the key file."""
        secure_home(settings.home)
        if settings.secret_key:
            refuse_placeholder(settings.secret_key)
            older = [settings.previous_secret_key] if settings.previous_secret_key else []
            return cls(settings.secret_key, *older)
        path = settings.home / KEY_FILE
        keys = load_or_create_keys(path)
        return cls(keys[0], *keys[1:], source=path)

    @classmethod
    def from_env(cls) -> SecretBox:
        return cls.from_settings(Settings.from_env())

    def encrypt(self, plaintext: str) -> bytes:
        self._refresh()
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        self._refresh()
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretKeyError(
                "cannot decrypt a stored secret: FERRY_SECRET_KEY (or FERRY_HOME/secret.key) is not the "
                "key it was encrypted with",
                field="secret_key",
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """``token`` encrypted again under the first key (SecretKeyError when no key opens it)."""
        self._refresh()
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret opens with none of the keys: add the key it was encrypted with "
                "as FERRY_PREVIOUS_SECRET_KEY (or below the first line of the key file)",
                field="secret_key",
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(key=<hidden>)"

    __str__ = __repr__
