"""What every repository module shares: name and value checks, integrity errors as ``Conflict``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ferry.db.models import Base
from ferry.domain.errors import Conflict, InvalidInput

# The repositories check these words, and ``ferry.db.repo`` offers them to its callers.
from ferry.domain.vocabulary import CREDENTIAL_KINDS as CREDENTIAL_KINDS
from ferry.domain.vocabulary import HOST_KEY_POLICIES as HOST_KEY_POLICIES
from ferry.domain.vocabulary import ON_BUSY as ON_BUSY
from ferry.domain.vocabulary import STRATEGIES as STRATEGIES


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""Default of optional update arguments whose ``None`` means "clear it"."""

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _unique_columns() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name and hasattr(constraint, "columns"):
                out[str(constraint.name)] = tuple(c.name for c in constraint.columns)
    return out


_CONSTRAINT_COLUMNS = _unique_columns()


def _violated_field(exc: IntegrityError) -> str | None:
    """The column a unique violation is about (the last of a composite key), else None."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)  # psycopg
    if diag is not None and getattr(diag, "constraint_name", None):
        columns = _CONSTRAINT_COLUMNS.get(diag.constraint_name)
        if columns and type(orig).__name__ == "UniqueViolation":
            return columns[-1]
        return None
    match = re.search(r"UNIQUE constraint failed: (.+)$", str(orig))  # sqlite3
    if match:
        return match.group(1).split(",")[-1].strip().rsplit(".", 1)[-1]
    return None


@contextmanager
def _write(session: Session, *, exists: str, in_use: str = "", field: str = "name") -> Iterator[None]:
    """A savepoint around one write; integrity errors become ``Conflict``.

    ``exists`` is the message for a unique violation, ``in_use`` for a violated foreign key.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as exc:
        column = _violated_field(exc)
        if column is not None:
            raise Conflict(exists, field=column) from exc
        raise Conflict(in_use or exists, field=field) from exc


def _name(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInput(
            f"{field} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def _choice(value: str, choices: Sequence[str], field: str) -> str:
    if value not in choices:
        raise InvalidInput(f"{field} must be one of {', '.join(choices)}", field=field)
    return value


def _int_range(value: int, field: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
        bound = f"between {low} and {high}" if high else f"at least {low}"
        raise InvalidInput(f"{field} must be an integer {bound}", field=field)
    return value


class Unset:
    """The type of ``UNSET``: an argument not given (where None is a value)."""


UNSET = Unset()


def _seconds(value: float | None, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 7 * 24 * 3600:
        raise InvalidInput(f"{field} must be a number of seconds between 0 and 604800, or null", field=field)
    return float(value)


def _text(value: str, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(f"{field} must be non-empty text of at most {max_len} characters", field=field)
    return value
