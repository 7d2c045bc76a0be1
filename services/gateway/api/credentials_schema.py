"""The bodies of ``/api/credentials``: a secret goes in, only its public summary comes out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ferry.domain.errors import FerryError
from ferry.domain.validation import key_fingerprint
from ferry.domain.vocabulary import CredentialKind
from ferry.infra.sshkeys import load_private_key
from services.gateway.api.bodies import Input, Output
from services.gateway.api.fields import MAX_SECRET, Name
from services.gateway.api.schemarules import ferry_error, when


class CredentialIn(Input):
    model_config = ConfigDict(
        json_schema_extra=when("kind", "ssh_key", {"properties": {"secret": {"format": "ssh-private-key"}}})
    )

    name: Name
    kind: CredentialKind
    secret: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET)] = Field(
        description="an SSH private key (OpenSSH or PEM, unencrypted) or a password; write-only",
        json_schema_extra={"writeOnly": True},
    )

    @model_validator(mode="after")
    def _key_parses(self) -> CredentialIn:
        if self.kind == "ssh_key":
            self.summary()  # raises when the key does not parse
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
