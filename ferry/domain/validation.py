"""Checks of user-supplied values that several services share: one rule, one place.

Git refs and repository URLs (they reach a ``git`` command line, so anything git could read as
an option, a revision expression or a remote helper is refused before any process starts; the
rules follow ``git check-ref-format`` plus what ferry never needs in a ref: ``~``, ``^``, ``:``,
``@{``), paths on hosts (deploy paths, paths inside a release), release ids, artifact digests
and SSH private keys. The gateway checks input with them, the builder and the agents check again
before acting; no service imports another for them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

from ferry.domain.errors import InvalidInput, InvalidPath, InvalidRef

MAX_REF_LENGTH = 255
MAX_URL_LENGTH = 1000
"""The longest repository URL: the API, the check here and the ``projects.repo_url`` column agree."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")
_FORBIDDEN_REF_CHARS = "~^:?*[\\"
# user@host:path, the scp-like form git accepts for ssh (no "//" before the colon).
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._~+-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*|/.+)$")
_SCHEMES = ("https", "ssh", "file")


def validate_ref(ref: str) -> str:
    """Return ``ref`` unchanged if it is a safe branch, tag, full ref name or hex commit; else InvalidRef."""
    reason = _ref_problem(ref)
    if reason is not None:
        raise InvalidRef(f"invalid git ref: {reason}", field="ref")
    return ref


def _ref_problem(ref: str) -> str | None:
    if not isinstance(ref, str) or ref == "":
        return "it is empty"
    if len(ref) > MAX_REF_LENGTH:
        return f"it is longer than {MAX_REF_LENGTH} characters"
    if ref.startswith("-"):
        return "it starts with '-'"
    if _CONTROL.search(ref):
        return "it contains a control character"
    if _WHITESPACE.search(ref):
        return "it contains whitespace"
    for char in _FORBIDDEN_REF_CHARS:
        if char in ref:
            return f"it contains {char!r}"
    if ".." in ref:
        return "it contains '..'"
    if "@{" in ref:
        return "it contains '@{'"
    if ref == "@":
        return "it is '@'"
    if "//" in ref:
        return "it contains '//'"
    if ref.startswith("/"):
        return "it starts with '/'"
    if ref.endswith("/"):
        return "it ends with '/'"
    if ref.endswith(".lock"):
        return "it ends with '.lock'"
    if ref.endswith("."):
        return "it ends with '.'"
    for component in ref.split("/"):
        if component.startswith("."):
            return "a path component starts with '.'"
        if component.endswith(".lock"):
            return "a path component ends with '.lock'"
    return None


def validate_repo_url(url: str, *, field: str = "repo_url") -> str:
    """Return ``url`` unchanged if git may fetch from it safely; else InvalidInput naming ``field``.

    Accepted: ``https://``, ``ssh://``, ``user@host:path``, ``file://`` and absolute local paths.
    The message never repeats the URL, which may carry a credential.
    """
    reason = _url_problem(url)
    if reason is not None:
        raise InvalidInput(f"invalid repository URL: {reason}", field=field)
    return url


def _url_problem(url: str) -> str | None:
    if not isinstance(url, str) or url == "":
        return "it is empty"
    if len(url) > MAX_URL_LENGTH:
        return f"it is longer than {MAX_URL_LENGTH} characters"
    if url.startswith("-"):
        return "it starts with '-'"
    if _CONTROL.search(url):
        return "it contains a control character"
    if url.startswith("/"):
        return None
    if "::" in url.split("/", 1)[0]:
        # git's "<transport>::<address>" remote-helper syntax; ext:: runs arbitrary commands.
        return "remote helper transports (such as ext:: or fd::) are not allowed"
    if _WHITESPACE.search(url):
        return "it contains whitespace"
    if "://" in url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            return "it is not a well-formed URL"
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            return f"scheme {scheme!r} is not supported (use https, ssh, file, user@host:path or a path)"
        host = parts.hostname or ""
        if scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                return "a file:// URL needs an absolute path (file:///path)"
            return None
        if not host:
            return "it has no host"
        if host.startswith("-") or (parts.username or "").startswith("-"):
            return "its host or user starts with '-'"
        if not parts.path or parts.path == "/":
            return "it has no repository path"
        return None
    match = _SCP_LIKE.match(url)
    if match is None:
        return "it is not an https://, ssh://, file:// URL, user@host:path or an absolute path"
    if match["host"].startswith("-") or match["user"].startswith("-"):
        return "its host or user starts with '-'"
    return None


def display_url(url: str) -> str:
    """``url`` with any password or token removed, fit for messages and logs."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<malformed repository URL>"
    if parts.username is None and parts.password is None:
        return url
    # An ssh user name (git@host) is not a secret; a password or an http(s) token is.
    if parts.scheme.lower() == "ssh" and parts.password is None:
        return url
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# --- release ids and artifact digests -------------------------------------------
RELEASE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RELEASE_ID_RE = re.compile(RELEASE_ID_PATTERN.removesuffix("$") + r"\Z")
DIGEST_RE = re.compile(r"[0-9a-f]{64}\Z")  # sha256 hex of the artifact bytes as stored (compressed)


def validate_release_id(release_id: str) -> str:
    """``release_id`` unchanged if it is 1-64 of ``[A-Za-z0-9_-]``; else InvalidPath."""
    if not isinstance(release_id, str) or not RELEASE_ID_RE.match(release_id):
        raise InvalidPath(f"release id must match [A-Za-z0-9_-]+: {release_id!r}", field="release_id")
    return release_id


def validate_digest(digest: str) -> str:
    """``digest`` unchanged if it is a sha256 in lowercase hex; else InvalidInput."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InvalidInput(f"artifact digest must be sha256 hex: {digest!r}", field="digest")
    return digest


# --- paths on hosts -------------------------------------------------------------
def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def validate_deploy_path(path: str) -> str:
    """An absolute path without '..' or control characters; returned without a trailing slash."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidPath(f"deploy path must be absolute: {path!r}", field="deploy_path")
    if _has_control(path):
        raise InvalidPath("deploy path contains control characters", field="deploy_path")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise InvalidPath(f"deploy path must not contain '.' or '..': {path!r}", field="deploy_path")
    clean = path.rstrip("/")
    if not clean:
        raise InvalidPath("deploy path must not be '/'", field="deploy_path")
    return clean


def validate_relative_path(path: str, field_name: str = "shared") -> str:
    """A path inside the release: relative, no '..', '.', empty parts or control characters."""
    if not isinstance(path, str) or not path or path.startswith("/") or _has_control(path):
        raise InvalidPath(f"shared path must be a relative path: {path!r}", field=field_name)
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidPath(f"shared path must not contain '', '.' or '..' parts: {path!r}", field=field_name)
    return "/".join(parts)


def key_fingerprint(b64: str) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a base64 key blob."""
    try:
        digest = hashlib.sha256(base64.b64decode(b64)).digest()
    except ValueError:
        return "(unparsable key)"
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
