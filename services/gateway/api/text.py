"""One validation policy for every text field of the API, and the rule that URLs carry no secrets.

Text is valid UTF-8 (no lone surrogates) without control characters other than tab and line
breaks, and without the bidirectional embedding, override and isolate characters that make a
name or a command read differently from what it is (CVE-2021-42574, "Trojan Source"). The
OpenAPI document states the same rule as a ``pattern`` (``TEXT_PATTERN``) on every free-text
field, so a client can know it before sending.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

_FORBIDDEN = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_BAD = re.compile(f"[{_FORBIDDEN}\ud800-\udfff]")
_FORBIDDEN_ESCAPED = (
    "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069"
)
"""``_FORBIDDEN`` as a JSON Schema (ECMA-262) regular expression writes it."""
TEXT_PATTERN = f"^[^{_FORBIDDEN_ESCAPED}]*$"
NONBLANK_TEXT_PATTERN = f"^[^{_FORBIDDEN_ESCAPED}]*[^\\s{_FORBIDDEN_ESCAPED}][^{_FORBIDDEN_ESCAPED}]*$"
"""``TEXT_PATTERN`` with at least one character that is not white space (a command, a reason)."""
_NAMES = {0: "NUL", 0x7F: "DEL", 0x202E: "RIGHT-TO-LEFT OVERRIDE", 0x202D: "LEFT-TO-RIGHT OVERRIDE"}


def text_problem(value: str) -> str | None:
    """Why ``value`` breaks the text policy, or None."""
    found = _BAD.search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"is not valid Unicode text (a lone surrogate U+{code:04X} at position {found.start()})"
    name = _NAMES.get(code, "a control character" if code < 0x202A else "a bidirectional control")
    return f"must not contain {name} (U+{code:04X}) at position {found.start()}"


def check_value(value: Any) -> Any:
    """``value`` when every string in it (lists included) keeps the policy; else ValueError."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise ValueError(problem)
    elif isinstance(value, list | tuple):
        for item in value:
            check_value(item)
    return value


def refuse_url_credentials(url: str) -> str:
    """A repository URL without a user's secret in it.

    ``https://user:token@host/...`` would be shown to every viewer, stored in events and sent
    to webhooks; the secret belongs in a credential. An ssh user name (``git@host``) is fine.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # the URL check proper reports it
    has_user = parts.username is not None or "@" in parts.netloc
    if parts.scheme in ("http", "https") and has_user or parts.password is not None:
        raise ValueError(
            "the repository URL carries credentials; give the URL without them and store the "
            "secret with POST /api/credentials (an SSH deploy key as kind 'ssh_key' for ssh "
            "remotes, or an https access token as kind 'password', written TOKEN or USER:TOKEN), "
            "then name that credential in repo_credential"
        )
    return url


def documented(schema: Any) -> Any:
    """Add ``TEXT_PATTERN`` to every free-text string of a JSON schema (in place; returned)."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "string"
            and not {"pattern", "enum", "const", "format"} & schema.keys()
            and not schema.get("readOnly")
        ):
            schema["pattern"] = TEXT_PATTERN
        for value in schema.values():
            documented(value)
    elif isinstance(schema, list):
        for value in schema:
            documented(value)
    return schema
