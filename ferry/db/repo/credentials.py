"""Credentials: SSH keys and passwords, encrypted at rest; secrets leave only through ``load_secret``."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from ferry.db.inuse import refuse_if_used
from ferry.db.models import (
    Credential,
    Host,
    Project,
    Webhook,
)
from ferry.domain.errors import Conflict, InvalidInput, NotFound
from ferry.infra.secrets import SecretBox

from ._common import CREDENTIAL_KINDS, _choice, _name, _write


@dataclass(frozen=True)
class CredentialInfo:
    id: int
    name: str
    kind: str
    summary: str
    created_at: datetime


def _credential_info(c: Credential) -> CredentialInfo:
    return CredentialInfo(c.id, c.name, c.kind, c.summary, c.created_at)


def ssh_key_summary(private_key: str) -> str:
    """``<type> SHA256:<fingerprint>`` of a private key's public half (as ``ssh-keygen -l`` prints)."""
    data = private_key.encode()
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except TypeError as exc:  # encrypted key: ferry does not keep key passphrases
        raise InvalidInput("the private key must not be passphrase-protected", field="secret") from exc
    except (ValueError, AttributeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput("secret is not a readable SSH private key", field="secret") from exc
    kind, blob = public.split(b" ")[:2]
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).rstrip(b"=")
    return f"{kind.decode()} SHA256:{digest.decode()}"


def _credential(session: Session, name: str, field: str = "name") -> Credential:
    c = session.scalar(select(Credential).where(Credential.name == name))
    if c is None:
        raise NotFound(f"no credential named {name!r}", field=field)
    return c


def _summary_for(kind: str, secret: str) -> str:
    if kind == "ssh_key":
        return ssh_key_summary(secret)
    if not secret:
        raise InvalidInput("password must not be empty", field="secret")
    return "password"


def create_credential(session: Session, box: SecretBox, name: str, kind: str, secret: str) -> CredentialInfo:
    """Store a credential encrypted; its summary is the key's fingerprint, never the secret."""
    _name(name)
    _choice(kind, CREDENTIAL_KINDS, "kind")
    summary = _summary_for(kind, secret)
    c = Credential(name=name, kind=kind, secret=box.encrypt(secret), summary=summary)
    with _write(session, exists=f"a credential named {name!r} already exists"):
        session.add(c)
    return _credential_info(c)


def get_credential(session: Session, name: str) -> CredentialInfo:
    return _credential_info(_credential(session, name))


def list_credentials(session: Session) -> list[CredentialInfo]:
    return [_credential_info(c) for c in session.scalars(select(Credential).order_by(Credential.name))]


def update_credential(
    session: Session,
    box: SecretBox,
    name: str,
    *,
    new_name: str | None = None,
    secret: str | None = None,
) -> CredentialInfo:
    """Rename a credential and/or replace its secret (same kind)."""
    c = _credential(session, name)
    with _write(session, exists=f"a credential named {new_name!r} already exists"):
        if new_name is not None:
            c.name = _name(new_name)
        if secret is not None:
            c.summary = _summary_for(c.kind, secret)
            c.secret = box.encrypt(secret)
    return _credential_info(c)


def delete_credential(session: Session, name: str) -> None:
    refuse_if_used(session, f"credential {name!r}", credential=name)
    c = _credential(session, name)
    users = list(session.scalars(select(Host.name).where(Host.credential_id == c.id)))
    users += list(session.scalars(select(Project.name).where(Project.repo_credential_id == c.id)))
    if users:
        raise Conflict(f"credential {name!r} is in use by {', '.join(sorted(users))}", field="name")
    with _write(session, exists="", in_use=f"credential {name!r} is in use"):
        session.delete(c)


def load_secret(session: Session, box: SecretBox, credential_name: str) -> str:
    """The decrypted secret of a credential: for the processes that connect, never for responses."""
    return box.decrypt(_credential(session, credential_name, field="credential").secret)


def rotate_secrets(session: Session, box: SecretBox) -> int:
    """Encrypt every stored secret (credentials, webhook secrets) again under ``box``'s first key."""
    count = 0
    for c in session.scalars(select(Credential)):
        c.secret = box.rotate(c.secret)
        count += 1
    for w in session.scalars(select(Webhook).where(Webhook.secret.is_not(None))):
        assert w.secret is not None
        w.secret = box.rotate(w.secret)
        count += 1
    session.flush()
    return count
