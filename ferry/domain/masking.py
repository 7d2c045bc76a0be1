"""Masking secret values in output: every occurrence becomes ``***`` before anything is stored or sent.

A project's secret variables reach build hooks and host commands as environment variables;
whatever those print goes through a ``Masker`` first (the build log, each step's output, the
events' tails, error messages). Like GitLab's masked variables it replaces the value itself,
and also its cheap encodings (base64, URL and JSON escaping) and each line of a multi-line
value; a value transformed any other way (reversed, hex, split by the program) is not found.
Values shorter than ``MIN_MASKED`` characters cannot be masked without mangling ordinary
output, so ferry refuses to store them.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterable, Sequence
from typing import AnyStr
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_MASKED = 4
"""The shortest value (and the shortest encoded form) that is masked."""


def forms(value: str) -> set[str]:
    """``value`` and the forms it commonly takes in output, each at least ``MIN_MASKED`` long."""
    raw = value.encode("utf-8", "surrogatepass")
    b64 = base64.b64encode(raw).decode("ascii")
    found = {
        value,
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    found.update(line.strip() for line in value.splitlines())
    return {f for f in found if len(f) >= MIN_MASKED}


class Masker:
    """Replaces every form of the given secrets with ``***``: leftmost first, the longest where two
    start together (as a regular expression would), found with ``str.find`` (linear, C speed,
    and no pattern to compile however long the values)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        needles: set[str] = set()
        for secret in secrets:
            if secret:
                needles |= forms(secret)
        ordered = sorted(needles, key=lambda s: (-len(s), s))  # a longer form wins where two start
        self._needles = ordered
        self._encoded = [n.encode("utf-8", "surrogatepass") for n in ordered]
        self.longest = max((len(e) for e in self._encoded), default=0)
        """The longest form in bytes: a stream holds back one byte less than this."""

    def __bool__(self) -> bool:
        return bool(self._needles)

    def text(self, text: str) -> str:
        """``text`` with every secret form replaced by ``***``."""
        spans = _spans(text, self._needles, len(text))
        return _replaced(text, spans, MASK, len(text))

    def data(self, data: bytes) -> bytes:
        """``data`` (UTF-8 output) with every secret form replaced by ``***``."""
        spans = _spans(data, self._encoded, len(data))
        return _replaced(data, spans, MASK.encode(), len(data))

    def cut_text(self, text: str) -> str:
        """Mask ``text`` whose front was cut off: a leading piece of a secret's end goes too."""
        masked = self.text(text)
        cut = max((_overlap(needle, masked) for needle in self._needles), default=0)
        return MASK + masked[cut:] if cut else masked

    def stream(self) -> StreamMasker:
        return StreamMasker(self)


class StreamMasker:
    """Masks output that arrives in chunks: a value split across two chunks is still found.

    ``feed`` returns what is safe to pass on and holds back, unmasked, the last ``longest - 1``
    bytes (a value's beginning may be there); ``flush`` returns the rest at the end. Output
    masked chunk by chunk is exactly the output masked whole.
    """

    def __init__(self, masker: Masker) -> None:
        self._needles = masker._encoded
        self._held = b""
        self._keep = max(masker.longest - 1, 0)

    def feed(self, data: bytes) -> bytes:
        if not self._needles:
            return data
        joined = self._held + data
        split = len(joined) - self._keep
        # only occurrences that start before ``split`` are certain: a longer form may start later
        spans = _spans(joined, self._needles, split)
        end = max(split, spans[-1][1] if spans else 0, 0)
        self._held = joined[end:]
        return _replaced(joined, spans, MASK.encode(), end)

    def flush(self) -> bytes:
        rest, self._held = self._held, b""
        spans = _spans(rest, self._needles, len(rest))
        return _replaced(rest, spans, MASK.encode(), len(rest))


def _spans(hay: AnyStr, needles: Sequence[AnyStr], stop: int) -> list[tuple[int, int]]:
    """Where ``needles`` (longest first) occur in ``hay``, leftmost first and not overlapping,
    starting before ``stop``."""
    heap = [(at, i) for i, n in enumerate(needles) if (at := hay.find(n)) >= 0]
    heapq.heapify(heap)
    spans: list[tuple[int, int]] = []
    pos = 0
    while heap:
        at, i = heap[0]
        if at < pos:  # inside the last span: this needle's next occurrence after it
            again = hay.find(needles[i], pos)
            if again < 0:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (again, i))
            continue
        if at >= stop:
            break
        pos = at + len(needles[i])  # the smallest index at one start is the longest needle there
        spans.append((at, pos))
    return spans


def _replaced(hay: AnyStr, spans: list[tuple[int, int]], mask: AnyStr, end: int) -> AnyStr:
    """``hay[:end]`` with each span replaced by ``mask``."""
    parts: list[AnyStr] = []
    pos = 0
    for start, stop in spans:
        parts += [hay[pos:start], mask]
        pos = stop
    parts.append(hay[pos:end])
    return hay[:0].join(parts)


def _overlap(needle: str, text: str) -> int:
    """How much of ``text``'s front is the end of ``needle`` (a proper suffix, or a piece of one
    when ``text`` is shorter): the longest such, checked where ``text[0]`` occurs in ``needle``."""
    if not text:
        return 0
    size = len(needle)
    at = needle.find(text[0], 1)
    while at >= 0:
        if needle.startswith(text[: size - at], at):
            return min(size - at, len(text))
        at = needle.find(text[0], at + 1)
    return 0


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (and its common encodings) replaced by ``***``."""
    return Masker(secrets).text(text)
