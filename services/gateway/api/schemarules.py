"""What the server enforces, said in the OpenAPI document too (issue 9: "the schema says what the
server enforces").

Each pattern here accepts only values the server's own validators accept (it may be narrower:
the validators stay the authority and keep their messages), so a client generating from the
document is never refused. Rules a regular expression cannot state (an SSH key that parses)
are named as a ``format`` (``ssh-private-key``, ``ssh-public-key``) and conditional rules as
``if``/``then``. PATCH models say which fields may be null (null clears them); any other
field may be left out but not sent as null.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from ferry.domain.errors import FerryError
from ferry.domain.events import TYPE_NAMES
from services.gateway.api.text import NONBLANK_TEXT_PATTERN

T = TypeVar("T")

_COMPONENT = r"\.{0,2}[A-Za-z0-9_@+~%,=-][A-Za-z0-9._@+~%,=-]*"  # never ".", ".." nor empty
DEPLOY_PATH_PATTERN = rf"^(/{_COMPONENT})+/?$"
RELATIVE_PATH_PATTERN = rf"^{_COMPONENT}(/{_COMPONENT})*/?$"
_REF_PART = r"[A-Za-z0-9_]([A-Za-z0-9_-]|\.[A-Za-z0-9_-])*"
REF_PATTERN = rf"^(?!.*\.lock(/|$)){_REF_PART}(/{_REF_PART})*$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(\.{_LABEL})*"
_PORT = r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
"""A TCP port, 1-65535."""
_PATH = r"(/[A-Za-z0-9._~%+-]+)+"
REPO_URL_PATTERN = (
    rf"^https://{_HOST}{_PORT}{_PATH}$"
    rf"|^ssh://([A-Za-z0-9_][A-Za-z0-9._-]*@)?{_HOST}{_PORT}{_PATH}$"
    rf"|^file://{_PATH}$"
    rf"|^[A-Za-z0-9_][A-Za-z0-9._~+-]*@{_HOST}:[A-Za-z0-9._~][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$"
)
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"({_H16}:{_H16}|{_OCTET}(\.{_OCTET}){{3}})"
IPV6_PATTERN = (
    "("
    + "|".join(
        [
            rf"({_H16}:){{6}}{_LS32}",
            rf"::({_H16}:){{5}}{_LS32}",
            rf"({_H16})?::({_H16}:){{4}}{_LS32}",
            rf"(({_H16}:){{0,1}}{_H16})?::({_H16}:){{3}}{_LS32}",
            rf"(({_H16}:){{0,2}}{_H16})?::({_H16}:){{2}}{_LS32}",
            rf"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(({_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(({_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
"""An IPv6 address as RFC 3986 writes it (``IPv6address``), which Python's ``urlsplit`` accepts."""
HTTP_URL_PATTERN = rf"^https?://({_HOST}|\[{IPV6_PATTERN}\]){_PORT}(/[!-~]*)?$"
HEALTH_URL_PATTERN = rf"^https?://({_HOST}|\[{IPV6_PATTERN}\]|\{{address\}}){_PORT}(/[!-~]*)?$"
"""A health check's URL: ``{address}`` stands for the host's address (the agent fills it in)."""
ADDRESS_PATTERN = r"^[A-Za-z0-9_.:][A-Za-z0-9_.:-]*$|^\[[0-9A-Fa-f:.]+\]$"
COMMAND_PATTERN = NONBLANK_TEXT_PATTERN


def ferry_error(message: str, code: str = "INVALID_INPUT", loc: str | None = None) -> PydanticCustomError:
    """A validation error carrying ferry's code and, for model-level checks, the field it is about."""
    ctx: dict[str, Any] = {"message": message, "code": code}
    if loc is not None:
        ctx["loc"] = loc
    return PydanticCustomError("ferry", "{message}", ctx)


def ferry_check(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """Run one of ferry's validators inside pydantic, keeping its error code and message."""

    def run(value: Any) -> T:
        try:
            return check(value)
        except FerryError as exc:
            raise ferry_error(exc.message, exc.code) from None

    return run


def compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` as JSON Schema (ECMA-262) reads it: ``$`` is the end of the text, where
    Python's ``$`` also matches before a final newline ("a\\n" would pass ``^a$``)."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def stated(pattern: str, what: str, code: str = "INVALID_INPUT") -> tuple[Any, Any]:
    """Metadata for an ``Annotated`` string: ``pattern`` in the schema, and a check holding the
    value to it (Python ``re``, after ferry's own validators so their messages come first)."""
    rule = compiled(pattern)

    def check(value: str) -> str:
        if rule.search(value) is None:
            where = "the document's pattern" if len(pattern) > 120 else f"pattern {pattern}"
            raise ferry_error(f"must be {what} ({where})", code)
        return value

    return AfterValidator(check), Field(json_schema_extra={"pattern": pattern})


def event_patterns() -> list[str]:
    """Every value ``events`` accepts: each event type, and each prefix ending in a dot."""
    prefixes = {t[: i + 1] for t in TYPE_NAMES for i, c in enumerate(t) if c == "."}
    return sorted(set(TYPE_NAMES) | prefixes)


def when(field: str, value: Any, then: dict[str, Any], *, default: bool = False) -> dict[str, Any]:
    """``if field == value then …`` (``default``: the field's default is ``value``, so absent counts)."""
    condition: dict[str, Any] = {"properties": {field: {"const": value}}}
    if not default:
        condition["required"] = [field]
    return {"if": condition, "then": then}


def _strip_null(prop: dict[str, Any]) -> None:
    options = prop.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            del prop["anyOf"]
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
    prop.pop("default", None)


def patch_schema(schema: dict[str, Any], cls: Any) -> None:
    """For PATCH bodies: only the fields in ``cls.NULLABLE`` may be null (null clears them)."""
    nullable: frozenset[str] = getattr(cls, "NULLABLE", frozenset())
    for name, prop in schema.get("properties", {}).items():
        if name not in nullable:
            _strip_null(prop)


def null_problem(data: Any, nullable: frozenset[str]) -> str | None:
    """The first field of a PATCH body that is null but may not be."""
    if isinstance(data, dict):
        for name, value in data.items():
            if value is None and name not in nullable:
                return str(name)
    return None
