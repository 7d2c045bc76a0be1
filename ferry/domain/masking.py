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
import json
import re
from collections.abc import Iterable
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
    """Replaces every form of the given secrets with ``***``, the longest form first."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        needles: set[str] = set()
        for secret in secrets:
            if secret:
                needles |= forms(secret)
        ordered = sorted(needles, key=lambda s: (-len(s), s))  # a longer form wins where two start
        self._needles = ordered
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        encoded = [n.encode("utf-8", "surrogatepass") for n in ordered]
        self._bytes = re.compile(b"|".join(map(re.escape, encoded))) if encoded else None
        self.longest = max((len(e) for e in encoded), default=0)
        """The longest form in bytes: a stream holds back one byte less than this."""

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        """``text`` with every secret form replaced by ``***``."""
        return self._text.sub(MASK, text) if self._text is not None else text

    def data(self, data: bytes) -> bytes:
        """``data`` (UTF-8 output) with every secret form replaced by ``***``."""
        return self._bytes.sub(MASK.encode(), data) if self._bytes is not None else data

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
        self._pattern = masker._bytes
        self._held = b""
        self._keep = max(masker.longest - 1, 0)

    def feed(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        joined = self._held + data
        split = len(joined) - self._keep
        out: list[bytes] = []
        pos = 0
        for found in self._pattern.finditer(joined):
            if found.start() >= split:  # a longer form may still start there: decide later
                break
            out += [joined[pos : found.start()], MASK.encode()]
            pos = found.end()
        end = max(split, pos)
        out.append(joined[pos:end])
        self._held = joined[end:]
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._held = self._held, b""
        return self._pattern.sub(MASK.encode(), rest) if self._pattern is not None else rest


def _overlap(needle: str, text: str) -> int:
    """The length of the longest proper suffix of ``needle`` that ``text`` starts with (linear time)."""
    joined = text[: len(needle) - 1] + "\0" + needle  # no border can span the separator: too long
    border = [0] * len(joined)  # Knuth-Morris-Pratt prefix function
    for i in range(1, len(joined)):
        k = border[i - 1]
        while k and joined[i] != joined[k]:
            k = border[k - 1]
        border[i] = k + 1 if joined[i] == joined[k] else 0
    return border[-1]


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (and its common encodings) replaced by ``***``."""
    return Masker(secrets).text(text)
