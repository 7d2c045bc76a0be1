"""The field types the API's resources share: names, paths, URLs, git refs, hosts, commands.

Checks that ferry's core already owns (git refs, repository URLs, deploy paths) call it, so a
rule lives once; their errors keep ferry's code (``INVALID_REF``…) through the ``"ferry"``
error type. Each string type also states its rule as a ``pattern`` (``schemarules.py``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import urlsplit

import paramiko
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from ferry.domain.agentgroups import GROUP_PATTERN
from ferry.domain.validation import (
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    validate_deploy_path,
    validate_ref,
    validate_relative_path,
    validate_repo_url,
)
from services.gateway.api.schemarules import (
    ADDRESS_PATTERN,
    DEPLOY_PATH_PATTERN,
    REF_PATTERN,
    RELATIVE_PATH_PATTERN,
    REPO_URL_PATTERN,
    ferry_check,
    stated,
)
from services.gateway.api.text import NONBLANK_TEXT_PATTERN, refuse_url_credentials

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MAX_SECRET = 64 * 1024
MAX_COMMAND = 8 * 1024
MAX_PATH = 1024
MAX_HOST_KEY = 16 * 1024


NON_BLANK = stated(NONBLANK_TEXT_PATTERN, "text with a character that is not white space")
"""Metadata for a string that must say something (``Annotated[str, …, *NON_BLANK]``)."""


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``2.0``: take it as 2 (strict input refuses other floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""Metadata for every ``int`` of a request body (``Annotated[int, Integral, Field(...)]``)."""


def _host_key(line: str) -> str:
    """An OpenSSH public key line ``type base64 [comment]``, returned as ``type base64``."""
    if len(line) > MAX_HOST_KEY:
        raise ValueError(f"host key: longer than {MAX_HOST_KEY} characters")
    parts = line.split()
    if len(parts) not in (2, 3):
        raise ValueError("host key must be an OpenSSH public key line: 'ssh-ed25519 AAAA… [comment]'")
    kind, blob = parts[0], parts[1]
    try:
        raw = base64.b64decode(blob, validate=True)
        key = paramiko.PKey.from_type_string(kind, raw)
    except (binascii.Error, ValueError):
        raise ValueError("host key: the key data is not base64") from None
    except Exception:  # noqa: BLE001 - paramiko raises many kinds for a malformed blob
        raise ValueError(f"host key: not a valid {kind} public key") from None
    if key.get_base64() != blob or base64.b64decode(key.get_base64()) != raw:
        # paramiko pads a short blob with zeros; a pinned key must be exactly the host's key.
        raise ValueError(f"host key: not a complete {kind} public key")
    return f"{key.get_name()} {key.get_base64()}"


def _address(value: str) -> str:
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if host.startswith("-") or not all(c.isalnum() or c in ".-:_" for c in host):
        raise ValueError("address must be a host name or an IP address")
    return host


def http_url(value: str) -> str:
    """``value`` when it is an http:// or https:// URL naming a host; else ValueError."""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("not a well-formed URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http health check needs an http:// or https:// URL")
    return value


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Command = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND)]
RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PATH),
    AfterValidator(ferry_check(validate_relative_path)),
    *stated(RELATIVE_PATH_PATTERN, "a relative path of plain names", "INVALID_PATH"),
]
ExcludePattern = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH)]
DeployPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PATH),
    AfterValidator(ferry_check(validate_deploy_path)),
    *stated(DEPLOY_PATH_PATTERN, "an absolute path of plain names", "INVALID_PATH"),
]
RepoUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    AfterValidator(ferry_check(validate_repo_url)),
    AfterValidator(refuse_url_credentials),
    *stated(REPO_URL_PATTERN, "an https://, ssh://, file:// or user@host:path URL"),
]
GitRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_REF_LENGTH),
    AfterValidator(ferry_check(validate_ref)),
    *stated(REF_PATTERN, "a branch, tag or commit name", "INVALID_REF"),
]
HostKey = Annotated[
    str,
    AfterValidator(_host_key),
    # The format says it all (a key line that parses, at most MAX_HOST_KEY characters); a
    # maxLength beside it would only have generators try lines that are not keys.
    Field(json_schema_extra={"format": "ssh-public-key"}),
]
Address = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(_address),
    *stated(ADDRESS_PATTERN, "a host name or an IP address"),
]
User = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Reason = Annotated[str, StringConstraints(max_length=2000)]
AgentGroup = Annotated[
    str,
    StringConstraints(pattern=GROUP_PATTERN),
    Field(description="only agents started with this FERRY_AGENT_GROUP serve the host"),
]
