"""The bodies of ``/api/credentials``: a secret goes in, only its public summary comes out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ferry.domain.errors import FerryError
from ferry.domain.validation import key_fingerprint
from ferry.domain.vocabulary import CredentialKind
from ferry.infra.sshkeys import load_private_key
from services.gateway.api.bodies import Input, Output
from services.gateway.api.fields import MAX_SECRET, Name
from services.gateway.api.schemarules import ferry_error

MAX_PASSWORD = 4096


def _secret_by_kind(schema: dict[str, Any]) -> None:
    """What ``secret`` must be depends on ``kind``: a private key that parses (a ``format``, as no
    pattern can say it), or a password of bounded text; one ``oneOf`` branch each."""
    secret = schema["properties"]["secret"]
    for rule in ("type", "minLength", "maxLength"):
        secret.pop(rule)
    text = {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD}
    by_kind: dict[CredentialKind, dict[str, Any]] = {
        "ssh_key": {"type": "string", "format": "ssh-private-key"},
        "password": text,
    }
    schema["oneOf"] = [{"properties": {"kind": {"const": k}, "secret": s}} for k, s in by_kind.items()]


class CredentialIn(Input):
    model_config = ConfigDict(json_schema_extra=_secret_by_kind)

    name: Name
    kind: CredentialKind
    secret: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET)] = Field(
        description=f"an SSH private key (OpenSSH or PEM, unencrypted, at most {MAX_SECRET} characters) or "
        f"a password or access token (at most {MAX_PASSWORD} characters); write-only",
        json_schema_extra={"writeOnly": True},
    )

    @model_validator(mode="after")
    def _key_parses(self) -> CredentialIn:
        if self.kind == "ssh_key":
            self.summary()  # raises when the key does not parse
        elif len(self.secret) > MAX_PASSWORD:
            raise ferry_error(f"a password is at most {MAX_PASSWORD} characters", loc="secret")
        return self

    def summary(self) -> str:
        """A public description of the secret: the key's type and fingerprint, never the secret."""
        if self.kind == "password":
            return "password"
        try:
            key = load_private_key(self.secret)
        except FerryError:
            raise ferry_error(
                "not a readable SSH private key (OpenSSH or PEM, Ed25519/ECDSA/RSA, without a passphrase)",
                loc="secret",
            ) from None
        return f"{key.get_name()} {key_fingerprint(key.get_base64())}"


class CredentialOut(Output):
    name: str
    kind: CredentialKind
    fingerprint: str = Field(description="public summary: key type and SHA256 fingerprint, or 'password'")
    created_at: datetime


class CredentialList(Output):
    credentials: list[CredentialOut]
