"""What a WebSocket client may send the notifier: ``?since=N`` or one first message ``{"since": N}``.

Both are read strictly, so hostile input ends in a 4400 close with a reason instead of a crash:
the frame is bounded in size and nesting before it is parsed, non-finite numbers (``Infinity``,
``NaN``, ``1e309``) are refused by the parser, and ``since`` must be a plain non-negative integer.
"""

from __future__ import annotations

import json
from typing import Any

MAX_FIRST_MESSAGE = 1024  # bytes; ``{"since": 18446744073709551615}`` is 32
MAX_DEPTH = 4
MAX_SINCE = 2**63 - 1  # a JetStream sequence is a uint64; anything larger is not a position


class BadInput(ValueError):
    """The client's input, with a reason short enough for a close frame (123 bytes at most)."""


def _refuse_constant(name: str) -> Any:
    raise BadInput(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")) or value != value:
        raise BadInput("number out of range")
    return value


def _check_depth(text: str) -> None:
    """Refuse arrays and objects nested deeper than ``MAX_DEPTH`` without recursing (strings skipped)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BadInput("nested too deeply")
        elif ch in "]}":
            depth -= 1


def _checked(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadInput("since must be a non-negative integer")
    if value > MAX_SINCE:
        raise BadInput("since is out of range")
    return value


def parse_since(raw: str | None) -> int | None:
    """``?since=N`` (ASCII digits only); None when absent."""
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise BadInput("since must be a non-negative integer")
    return _checked(int(raw) if len(raw) <= 20 else MAX_SINCE + 1)


def parse_first_message(message: str | bytes | None) -> int | None:
    """The ``since`` of a first message ``{"since": N}`` (``{}`` and an empty frame mean none)."""
    if not message:
        return None
    if len(message) > MAX_FIRST_MESSAGE:
        raise BadInput(f"first message longer than {MAX_FIRST_MESSAGE} bytes")
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("first message is not UTF-8") from None
    _check_depth(message)
    try:
        data = json.loads(message, parse_constant=_refuse_constant, parse_float=_finite_float)
    except BadInput:
        raise
    except (ValueError, RecursionError):
        raise BadInput("first message is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput('first message must be an object such as {"since": 0}')
    unknown = sorted(set(data) - {"since"})
    if unknown:
        raise BadInput(f"unknown field {unknown[0][:40]!r}")
    since = data.get("since")
    return None if since is None else _checked(since)
