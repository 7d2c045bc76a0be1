"""Masking secret values in output (ferry.domain.masking) and the rules for secret variables."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ferry.domain.errors import InvalidInput
from ferry.domain.masking import MASK, Masker, mask
from ferry.domain.variables import (
    ALLOWED_NAME_PATTERN,
    MAX_VALUE,
    RESERVED_NAMES,
    check_name,
    check_value,
    name_problem,
    value_problem,
)

SECRET = "s3cr3t-T0ken/with+chars=ü"
secrets_st = st.text(min_size=4, max_size=40).filter(
    lambda s: "\0" not in s and s.strip() and len(s.strip()) >= 4
)
text_st = st.text(max_size=200)


def test_every_occurrence_and_common_encodings_are_masked() -> None:
    raw = SECRET.encode()
    text = "\n".join(
        [
            f"token={SECRET} again {SECRET}",
            base64.b64encode(raw).decode(),
            quote(SECRET, safe=""),
            json.dumps({"t": SECRET}),
        ]
    )
    out = mask(text, [SECRET])
    assert SECRET not in out
    assert base64.b64encode(raw).decode() not in out
    assert quote(SECRET, safe="") not in out
    assert out.count(MASK) == 5
    assert out.startswith("token=*** again ***\n")


def test_longest_secret_wins_and_short_or_empty_ones_are_ignored() -> None:
    assert mask("abcdefgh", ["abcd", "abcdefgh"]) == MASK
    assert mask("the abc", ["abc", ""]) == "the abc"  # below the minimum: never masked (and refused)
    assert mask("nothing here", []) == "nothing here"


def test_multiline_value_masks_each_line() -> None:
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----"
    out = mask("printed line: AAAAbbbbCCCC", [key])
    assert "AAAAbbbbCCCC" not in out


@given(secret=secrets_st, before=text_st, after=text_st)
def test_mask_never_leaves_the_value(secret: str, before: str, after: str) -> None:
    assert secret not in mask(before + secret + after + secret, [secret])


@given(secret=secrets_st, before=text_st, after=text_st, cuts=st.lists(st.integers(0, 500), max_size=6))
def test_a_value_split_across_chunks_is_masked(secret: str, before: str, after: str, cuts: list[int]) -> None:
    data = (before + secret + after).encode()
    masker = Masker([secret])
    stream = masker.stream()
    out = b""
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += stream.feed(data[last:cut])
        last = cut
    out += stream.feed(data[last:]) + stream.flush()
    assert secret.encode() not in out
    assert out == masker.data(data)  # chunking changes nothing


def test_stream_without_secrets_passes_chunks_through() -> None:
    stream = Masker().stream()
    assert stream.feed(b"abc") == b"abc"
    assert stream.flush() == b""


def test_cut_text_masks_the_end_of_a_value_at_the_front() -> None:
    masker = Masker(["abcdefgh"])
    assert masker.cut_text("efgh and more") == MASK + " and more"
    assert masker.cut_text("more abcdefgh") == "more " + MASK


@pytest.mark.parametrize("name", ["MY_TOKEN", "_X", "A1", "A" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["my_token", "1ABC", "A-B", "", "A" * 65, "FERRY_TOKEN", "PATH", "HOME", "LD_PRELOAD", "BASH_ENV", "IFS"],
)
def test_refused_names(name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(InvalidInput) as err:
        check_name(name)
    assert err.value.field == "name"


@pytest.mark.parametrize("value", ["abc", "", "    ", "a\0bcd", "x" * (MAX_VALUE + 1), "é" * (MAX_VALUE + 1)])
def test_refused_values_never_quote_the_value(value: str) -> None:
    problem = value_problem(value)
    assert problem is not None
    assert value.strip() == "" or value not in problem
    with pytest.raises(InvalidInput):
        check_value(value)


def test_short_value_says_why() -> None:
    assert "masked" in (value_problem("abc") or "")


@given(
    name=st.one_of(
        st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,70}\Z"),
        st.sampled_from(sorted(RESERVED_NAMES)),
        st.from_regex(r"\A(FERRY|LD|SSH|DYLD)_[A-Z0-9_]{0,8}\Z"),
    )
)
def test_the_documented_pattern_is_the_rule(name: str) -> None:
    assert (re.match(ALLOWED_NAME_PATTERN, name) is not None) == (name_problem(name) is None)


one_line_st = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=4, max_size=40)


@given(secret=one_line_st.filter(lambda s: len(s.strip()) >= 4), text=text_st, cut=st.integers(1, 39))
def test_cut_text_never_leaves_the_end_of_a_value(secret: str, text: str, cut: int) -> None:
    piece = secret[min(cut, len(secret) - 1) :]
    assume(not piece.startswith("*"))
    out = Masker([secret]).cut_text(piece + text)
    assert out.startswith(MASK) and not out.startswith(piece)


def test_cut_text_is_fast_for_long_values() -> None:
    value = "ab" * 16384
    masker = Masker([value])
    assert masker.cut_text(value[1:] + " tail") == MASK + " tail"
