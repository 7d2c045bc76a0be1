"""Parsing SSH private keys (paramiko): one reader for the gateway, which checks a key when it is
stored, and the agent, which loads it to connect."""

from __future__ import annotations

import io

import paramiko

from ferry.domain.errors import InvalidInput


def load_private_key(text: str) -> paramiko.PKey:
    """Parse a private key (OpenSSH or PEM) of any type paramiko supports; else InvalidInput."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise InvalidInput("unreadable private key (" + "; ".join(errors) + ")", field="private_key")
