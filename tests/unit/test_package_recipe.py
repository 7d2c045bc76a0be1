"""recipe_key and exclude validation (pure)."""

from __future__ import annotations

import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.domain.errors import InvalidInput, InvalidPath
from services.builder.package import recipe_key, tar_header, validate_excludes

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_same_recipe_same_key() -> None:
    a = recipe_key(SHA, ["make build"], ["*.log", "node_modules/"], "zst")
    b = recipe_key(SHA, ["make build"], ["*.log", "node_modules/"], "zst")
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0


def test_exclude_order_and_repeats_do_not_matter() -> None:
    assert recipe_key(SHA, [], ["a", "b", "a"], "gz") == recipe_key(SHA, [], ["b", "a"], "gz")


@pytest.mark.parametrize(
    "changed",
    [
        ("f" * 40, ["make build"], ["*.log"], "zst"),
        (SHA, ["make build", "make test"], ["*.log"], "zst"),
        (SHA, ["make  build"], ["*.log"], "zst"),
        (SHA, ["make build"], [], "zst"),
        (SHA, ["make build"], ["*.log"], "gz"),
        (SHA, ["make build"], ["*.log"], "none"),
    ],
)
def test_any_change_gives_another_key(changed: tuple[str, list[str], list[str], str]) -> None:
    assert recipe_key(*changed) != recipe_key(SHA, ["make build"], ["*.log"], "zst")


def test_hook_order_matters() -> None:
    assert recipe_key(SHA, ["a", "b"], [], "zst") != recipe_key(SHA, ["b", "a"], [], "zst")


def test_hook_boundaries_matter() -> None:
    # a naive join would make these equal
    assert recipe_key(SHA, ["a", "b"], [], "zst") != recipe_key(SHA, ["a\nb"], [], "zst")
    assert recipe_key(SHA, ["a,b"], [], "zst") != recipe_key(SHA, ["a", "b"], [], "zst")


@given(st.lists(st.text(max_size=20), max_size=4), st.lists(st.text(max_size=20), max_size=4))
def test_key_is_stable_and_hex(hooks: list[str], excludes: list[str]) -> None:
    key = recipe_key(SHA, hooks, excludes, "zst")
    assert key == recipe_key(SHA, list(hooks), list(reversed(excludes)), "zst")
    assert len(key) == 64


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        recipe_key(SHA, [], [], "bz2")
    assert caught.value.field == "fmt"


@pytest.mark.parametrize("pattern", ["*.log", "node_modules/", "build/cache/", "docs/*.md", ".env", "a..b"])
def test_relative_patterns_are_accepted(pattern: str) -> None:
    assert validate_excludes([pattern]) == [pattern]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../secrets", "'..'"),
        ("a/../../b", "'..'"),
        ("", "empty"),
        ("/", "empty"),
        ("a\nb", "control character"),
    ],
)
def test_unsafe_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        validate_excludes(["ok", pattern])
    assert caught.value.field == "excludes"
    assert reason in caught.value.message


# --- tar headers: the fast path must write exactly what tarfile writes --------------------

_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=160
)


@given(
    name=st.one_of(st.from_regex(r"[a-z0-9_./-]{1,110}", fullmatch=True), _NAMES),
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
    mode=st.integers(0, 0o7777),
    size=st.one_of(st.integers(0, 10**6), st.integers(8**11 - 2, 8**11 + 2)),
    mtime=st.one_of(st.integers(0, 2**33), st.integers(8**11 - 2, 8**11 + 2)),
    linkname=st.one_of(st.just(""), st.from_regex(r"[a-z./]{1,105}", fullmatch=True), _NAMES),
)
def test_tar_header_is_byte_identical_to_tarfile(
    name: str, kind: bytes, mode: int, size: int, mtime: int, linkname: str
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime, info.linkname = kind, mode, size, mtime, linkname
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert tar_header(name, kind=kind, mode=mode, size=size, mtime=mtime, linkname=linkname) == expected
