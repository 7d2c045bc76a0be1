"""Git ref and repository URL validation (pure; no git)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.domain.errors import InvalidInput, InvalidRef
from ferry.domain.validation import MAX_REF_LENGTH, display_url, validate_ref, validate_repo_url

# --- refs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "main",
        "feature/login-form",
        "release-1.2",
        "v1.2.3",
        "refs/heads/main",
        "refs/tags/v1.0",
        "HEAD",
        "deadbeef",
        "0123456789abcdef0123456789abcdef01234567",
        "user_branch.with.dots",
        "a",
        "x" * MAX_REF_LENGTH,
        "über-branch",
    ],
)
def test_accepts_branches_tags_and_commits(ref: str) -> None:
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_REF_LENGTH + 1), "longer than 255"),
        ("-main", "starts with '-'"),
        ("--upload-pack=touch /tmp/pwned", "starts with '-'"),
        ("main..dev", "'..'"),
        ("../etc/passwd", "'..'"),
        ("main\n", "control character"),
        ("ma\x00in", "control character"),
        ("ma\x7fin", "control character"),
        ("my branch", "whitespace"),
        ("tab\u00a0", "whitespace"),
        ("main~1", "'~'"),
        ("main^", "'^'"),
        ("HEAD:file", "':'"),
        ("what?", "'?'"),
        ("feat*", "'*'"),
        ("br[1]", "'['"),
        ("back\\slash", "'\\\\'"),
        ("main@{1}", "'@{'"),
        ("@", "'@'"),
        ("feature/", "ends with '/'"),
        ("/main", "starts with '/'"),
        ("main.lock", "ends with '.lock'"),
        ("refs/heads/x.lock/y", "'.lock'"),
        ("main.", "ends with '.'"),
        ("feature//x", "'//'"),
        ("feature/.hidden", "starts with '.'"),
        (".hidden", "starts with '.'"),
    ],
)
def test_refuses_with_a_reason(ref: str, reason: str) -> None:
    with pytest.raises(InvalidRef) as caught:
        validate_ref(ref)
    assert caught.value.field == "ref"
    assert reason in caught.value.message
    assert caught.value.code == "INVALID_REF"


@given(st.text(max_size=300).map(lambda s: "-" + s))
def test_any_ref_starting_with_dash_is_refused(ref: str) -> None:
    with pytest.raises(InvalidRef):
        validate_ref(ref)


@given(st.text(max_size=120), st.text(max_size=120))
def test_any_ref_containing_dot_dot_is_refused(before: str, after: str) -> None:
    with pytest.raises(InvalidRef):
        validate_ref(before + ".." + after)


_COMPONENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,30}", fullmatch=True).filter(
    lambda c: ".." not in c and not c.endswith((".", ".lock"))
)


@given(st.lists(_COMPONENT, min_size=1, max_size=5).map("/".join))
def test_any_valid_looking_branch_name_is_accepted(branch: str) -> None:
    assert validate_ref(branch) == branch
    assert validate_ref(f"refs/heads/{branch}") == f"refs/heads/{branch}"


@given(st.text(alphabet="0123456789abcdef", min_size=4, max_size=64))
def test_any_hex_commit_is_accepted(sha: str) -> None:
    assert validate_ref(sha) == sha


@given(st.text(max_size=300))
def test_never_raises_anything_but_invalid_ref(ref: str) -> None:
    try:
        validate_ref(ref)
    except InvalidRef as exc:
        assert exc.field == "ref"
    else:
        assert not ref.startswith("-") and ".." not in ref and ref.strip() == ref and ref


# --- repository URLs -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/app.git",
        "https://user:token@git.example.com/org/app",
        "ssh://git@git.example.com:2222/org/app.git",
        "ssh://git.example.com/srv/app.git",
        "git@github.com:org/app.git",
        "deploy@10.0.0.5:/srv/git/app.git",
        "file:///srv/git/app.git",
        "/srv/git/app.git",
        "/srv/git/with space/app.git",
    ],
)
def test_accepts_supported_repository_urls(url: str) -> None:
    assert validate_repo_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("-oProxyCommand=touch /tmp/x", "starts with '-'"),
        ("--upload-pack=touch /tmp/x", "starts with '-'"),
        ("ext::sh -c touch% /tmp/pwned", "remote helper"),
        ("EXT::sh -c id", "remote helper"),
        ("fd::17", "remote helper"),
        ("https://example.com/app\n.git", "control character"),
        ("https://example.com/a\x00", "control character"),
        ("ssh://-oProxyCommand=touch/x/app.git", "starts with '-'"),
        ("-user@host:app.git", "starts with '-'"),
        ("git@-host:app.git", "starts with '-'"),
        ("http://example.com/app.git", "not supported"),
        ("git://example.com/app.git", "not supported"),
        ("ftp://example.com/app.git", "not supported"),
        ("https://", "no host"),
        ("https://example.com/", "no repository path"),
        ("file://relative/path", "absolute path"),
        ("relative/path", "not an https"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com:notaport/app", "well-formed"),
    ],
)
def test_refuses_unsafe_or_unsupported_urls(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_repo_url(url)
    assert caught.value.field == "repo_url"
    assert reason in caught.value.message


def test_url_errors_never_repeat_the_credential() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_repo_url("http://user:s3cret@example.com/app.git")
    assert "s3cret" not in str(caught.value)


@given(st.text(max_size=200))
def test_url_starting_with_dash_is_refused(rest: str) -> None:
    with pytest.raises(InvalidInput):
        validate_repo_url("-" + rest)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@example.com/app.git", "https://example.com/app.git"),
        ("https://ghp_token@example.com:8443/app.git", "https://example.com:8443/app.git"),
        ("ssh://git@example.com/app.git", "ssh://git@example.com/app.git"),
        ("git@example.com:org/app.git", "git@example.com:org/app.git"),
        ("/srv/git/app.git", "/srv/git/app.git"),
    ],
)
def test_display_url_drops_credentials(url: str, shown: str) -> None:
    assert display_url(url) == shown
