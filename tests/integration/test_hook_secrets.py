"""Build hooks with secret variables, in the real bubblewrap sandbox: the hook sees the value, the log,
the tails and the commands shown hold ``***``, even when the value arrives split across reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.builder.hooks import TAIL_BYTES, run_hooks
from services.builder.sandbox import Sandbox

pytestmark = pytest.mark.skipif(Sandbox().problem() is not None, reason=str(Sandbox().problem()))

VALUE = "hook-secret-0123456789abcdef"


def test_hooks_see_the_value_and_every_output_masks_it(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "build.log"
    head, rest = VALUE[:9], VALUE[9:]
    commands = [
        'printf %s "$MY_TOKEN" | sha256sum | cut -d" " -f1 > seen.sha256; echo "token: $MY_TOKEN"',
        # the value in two writes 0.3 s apart: two reads of the pipe, masked all the same
        f"printf 'split: {head}'; sleep 0.3; printf '{rest} end\\n'",
        f'echo "literal {VALUE}"; head -c {TAIL_BYTES * 2} /dev/zero | tr "\\0" x; echo; '
        'echo "$MY_TOKEN"; exit 3',
    ]
    results = run_hooks(commands, cwd=work, env={}, timeout=30, log_path=log, secrets={"MY_TOKEN": VALUE})
    assert [r.exit_code for r in results] == [0, 0, 3]
    assert (work / "seen.sha256").read_text().strip() == hashlib.sha256(VALUE.encode()).hexdigest()
    text = log.read_text()
    assert VALUE not in text
    assert "token: ***" in text and "split: *** end" in text and "literal ***" in text
    for r in results:
        assert VALUE not in r.output_tail and VALUE not in r.command
    assert results[2].output_tail.rstrip().endswith("***")
    assert "literal ***" in results[2].command  # the command as the events show it
    assert sum(r.log_bytes for r in results) == log.stat().st_size


def test_no_secrets_changes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    results = run_hooks(["echo plain; echo $MY_TOKEN"], cwd=work, env={}, timeout=30, log_path=tmp_path / "l")
    assert results[0].output_tail == "plain\n\n"
