"""Per-project secret variables: what a name and a value may be.

A variable reaches the project's build hooks and host commands as an environment variable, so
its name is an environment variable's name, never one ferry sets itself (``FERRY_*``) nor one
that changes how a shell or the dynamic loader behaves (``PATH``, ``LD_PRELOAD``, ``BASH_ENV``…).
Its value is masked in every output (``ferry.domain.masking``), so it must be long enough
to be found without mangling ordinary text.
"""

from __future__ import annotations

import re
from typing import Final

from ferry.domain.errors import InvalidInput
from ferry.domain.masking import MIN_MASKED

NAME_PATTERN: Final = r"^[A-Z_][A-Z0-9_]{0,63}$"
MAX_VALUE: Final = 32 * 1024
"""Characters of a value: environments and command lines are not the place for files."""
MAX_VARIABLES: Final = 100
"""Variables of one project (they all travel in every hook's environment)."""
RESERVED_PREFIXES: Final = ("FERRY_", "LD_", "SSH_", "BASH_FUNC_", "DYLD_")
RESERVED_NAMES: Final = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "TMPDIR", "LANG", "TERM",
        "IFS", "ENV", "BASH_ENV", "BASHOPTS", "SHELLOPTS", "CDPATH", "PS4", "PROMPT_COMMAND",
        "GLOBIGNORE", "HOSTNAME", "MAIL", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
        "PERL5LIB", "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "GCONV_PATH", "LOCALDOMAIN",
        "HOSTALIASES", "RESOLV_HOST_CONF", "MALLOC_CHECK_", "TZDIR",
    }
)  # fmt: skip
_NAME = re.compile(NAME_PATTERN)
ALLOWED_NAME_PATTERN: Final = (
    f"^(?!(?:{'|'.join(RESERVED_PREFIXES)}))(?!(?:{'|'.join(sorted(RESERVED_NAMES))})$)" + NAME_PATTERN[1:]
)
"""``NAME_PATTERN`` without the reserved names: the whole rule as one pattern (the API states it)."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a secret variable's name, or None."""
    if not _NAME.match(name):
        return "must be an environment variable name: A-Z, 0-9 and _, not starting with a digit, at most 64"
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        return (
            f"{name} is set by ferry or changes how shells and programs start; reserved: "
            f"{', '.join(p + '*' for p in RESERVED_PREFIXES)} and {', '.join(sorted(RESERVED_NAMES))}"
        )
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret variable's value, or None (never quotes the value)."""
    if len(value) < MIN_MASKED:
        return (
            f"must be at least {MIN_MASKED} characters: a shorter value cannot be masked in build "
            "and host output without hiding ordinary text"
        )
    if len(value) > MAX_VALUE:
        return f"must be at most {MAX_VALUE} characters"
    if "\0" in value:
        return "must not contain NUL (an environment variable cannot hold it)"
    if not value.strip():
        return "must not be only whitespace (it could not be masked)"
    return None


def check_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput(f"variable name {problem}", field="name")
    return name


def check_value(value: str) -> str:
    problem = value_problem(value)
    if problem is not None:
        raise InvalidInput(f"value {problem}", field="value")
    return value
