"""Signed work: the gateway signs every work item and every release plan; builder and agents verify.

The gateway (its orchestrator and API) holds an Ed25519 private key; builder and agents get the
public key only. A work item carries ``Ferry-Signature`` over its subject, message id and body
(``Bus.publish_work``); a ``release.requested`` carries ``signature`` over the request and its
plan (``SigningEventStore``, the gateway's event store). Builder and agents verify the work
item before its handler runs (``ferry.infra.worker.run_consumer``) and every ``release.requested``
they read (``VerifyingEventStore``): unsigned or altered work is terminated with a log line
saying why, and nothing runs. So a stolen agent or builder credential, which may append to the
event stream, still cannot make another agent run a plan of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.aio.client import Client
from nats.js import JetStreamContext

from ferry.domain.errors import FerryError
from ferry.domain.events import Event, ReleaseRequested
from ferry.infra.eventstore import EventStore, StoredEvent, legacy_subject, subject_of
from ferry.infra.natsauth import private_dir, write_private

SIGNATURE = "Ferry-Signature"
KEY_ID = "Ferry-Key-Id"


class UntrustedWork(FerryError):
    """Work or a plan without a valid signature of the gateway's key: refused, nothing runs."""

    code = "UNTRUSTED_WORK"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def work_message(subject: str, msg_id: str, body: bytes) -> bytes:
    """What a work item's signature covers: where it goes, its de-duplication id, its bytes."""
    return b"ferry.work.v1\n" + subject.encode() + b"\n" + msg_id.encode() + b"\n" + body


def plan_message(event: ReleaseRequested) -> bytes:
    """What a plan's signature covers: the whole request but its signature and schema version."""
    payload = event.model_dump(mode="json", exclude={"signature", "schema_version"})
    return b"ferry.plan.v1\n" + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class WorkSigner:
    key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    @property
    def verifier(self) -> WorkVerifier:
        return WorkVerifier(self.key.public_key())

    def headers(self, subject: str, msg_id: str, body: bytes) -> dict[str, str]:
        sig = self.key.sign(work_message(subject, msg_id, body))
        return {SIGNATURE: _b64(sig), KEY_ID: self.key_id}

    def sign_plan(self, event: ReleaseRequested) -> ReleaseRequested:
        return event.model_copy(update={"signature": _b64(self.key.sign(plan_message(event)))})


@dataclass(frozen=True)
class WorkVerifier:
    key: Ed25519PublicKey

    def _check(self, signature: str | None, message: bytes, what: str) -> None:
        if not signature:
            raise UntrustedWork(f"{what} is not signed")
        try:
            self.key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError) as exc:
            raise UntrustedWork(
                f"{what} has a bad signature (altered, or not signed by the gateway)"
            ) from exc

    def verify_work(self, subject: str, headers: Mapping[str, str] | None, body: bytes) -> None:
        headers = headers or {}
        msg_id = headers.get("Nats-Msg-Id", "")
        self._check(headers.get(SIGNATURE), work_message(subject, msg_id, body), f"work item {subject}")

    def verify_plan(self, event: ReleaseRequested) -> None:
        self._check(event.signature, plan_message(event), f"plan of release {event.release_id}")


# --- keys ---------------------------------------------------------------------------------
def public_path(private: Path) -> Path:
    return private.with_suffix(".pub")


def ensure_signing_key(path: Path) -> WorkSigner:
    """The gateway's key at ``path``, created (0600, with ``.pub`` beside it) on first start."""
    if not path.exists():
        private_dir(path.parent)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:  # O_EXCL: two processes starting at once keep the first key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        except FileExistsError:
            pass
    signer = load_signing_key(path)
    pub = public_path(path)
    if not pub.exists():
        public = signer.key.public_key()
        write_private(
            pub,
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
        )
    return signer


def load_signing_key(path: Path) -> WorkSigner:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read the work signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{path} is not an Ed25519 private key")
    return WorkSigner(key)


def load_verify_key(path: Path) -> WorkVerifier:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"cannot read the work verification key {path} (FERRY_WORK_PUBLIC_KEY): {exc}; "
            "builder and agents refuse to run without it"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SystemExit(f"{path} is not an Ed25519 public key")
    return WorkVerifier(key)


# --- the stores -----------------------------------------------------------------------------
class SigningEventStore(EventStore):
    """The gateway's store: every ``release.requested`` it appends carries the plan's signature."""

    def __init__(self, js: JetStreamContext, signer: WorkSigner, **kwargs: Any) -> None:
        super().__init__(js, **kwargs)
        self.signer = signer

    async def append(self, events: Sequence[Event], *, expected_seq: int, whole_release: bool) -> list[int]:
        signed = [self.signer.sign_plan(e) if isinstance(e, ReleaseRequested) else e for e in events]
        return await super().append(signed, expected_seq=expected_seq, whole_release=whole_release)


class VerifyingEventStore(EventStore):
    """Builder's and agents' store: a release whose plan is not the gateway's, or whose events sit
    on another kind's subject (a forged request on a host subject), is refused as a whole."""

    def __init__(self, js: JetStreamContext, verifier: WorkVerifier, **kwargs: Any) -> None:
        super().__init__(js, **kwargs)
        self.verifier = verifier

    async def load(self, release_id: str, after: int = 0, *, legacy: bool = True) -> list[StoredEvent]:
        stored = await super().load(release_id, after, legacy=legacy)
        for s in stored:
            if s.subject and s.subject not in (subject_of(s.event), legacy_subject(release_id)):
                raise UntrustedWork(f"{s.event.type} of release {release_id} found on {s.subject}")
            if isinstance(s.event, ReleaseRequested):
                self.verifier.verify_plan(s.event)
        return stored


# Work consumers on a connection whose process verifies (builder, agents) check every item.
_VERIFIERS: weakref.WeakKeyDictionary[Client, tuple[str, WorkVerifier]] = weakref.WeakKeyDictionary()


def require_signed_work(nc: Client, stream: str, verifier: WorkVerifier) -> None:
    _VERIFIERS[nc] = (stream, verifier)


def work_verifier(nc: Client, stream: str) -> WorkVerifier | None:
    """The verifier every message of ``stream`` consumed over ``nc`` must pass, if any."""
    found = _VERIFIERS.get(nc)
    return found[1] if found is not None and found[0] == stream else None


def main(argv: list[str]) -> int:
    """``python -m ferry.infra.signing PATH``: the gateway's key at PATH (0600), PATH.pub for the others."""
    if len(argv) != 1:
        print("usage: python -m ferry.infra.signing PATH", file=sys.stderr)
        return 2
    path = Path(argv[0])
    signer = ensure_signing_key(path)
    print(f"work signing key {path} (key id {signer.key_id}); builder and agents get {public_path(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
