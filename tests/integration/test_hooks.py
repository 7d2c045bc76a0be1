"""Build hooks run as real shell processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ferry.errors import BuildError
from services.builder.hooks import TAIL_BYTES, TIMEOUT_EXIT_CODE, HookResult, run_hooks


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def run(
    commands: list[str], work: Path, *, env: dict[str, str] | None = None, timeout: float = 30
) -> list[HookResult]:
    return run_hooks(commands, cwd=work, env=env or {}, timeout=timeout, log_path=work.parent / "build.log")


def log_of(work: Path) -> str:
    return (work.parent / "build.log").read_text()


def test_runs_in_order_in_cwd_with_env_added_to_a_minimal_base(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_SECRET_OF_THE_WORKER", "leak")
    results = run(
        ['echo "$RELEASE_ID in $(pwd)" > first.txt', "cat first.txt; echo lang=$LANG; env | sort"],
        work,
        env={"RELEASE_ID": "r-42"},
    )
    assert [r.exit_code for r in results] == [0, 0]
    assert [r.index for r in results] == [0, 1]
    assert (work / "first.txt").read_text() == f"r-42 in {work}\n"
    tail = results[1].output_tail
    assert f"r-42 in {work}" in tail
    assert "lang=C.UTF-8" in tail
    assert "PATH=" in tail and "HOME=" in tail
    assert "FERRY_SECRET_OF_THE_WORKER" not in tail
    assert all(r.ok and r.duration >= 0 for r in results)


def test_given_env_overrides_the_base(work: Path) -> None:
    [result] = run(["echo $LANG"], work, env={"LANG": "de_DE.UTF-8"})
    assert result.output_tail == "de_DE.UTF-8\n"


def test_failure_stops_the_sequence_and_keeps_the_output(work: Path) -> None:
    results = run(["echo one", "echo about to fail >&2; exit 3", "touch never"], work)
    assert [r.exit_code for r in results] == [0, 3]
    assert results[1].command == "echo about to fail >&2; exit 3"
    assert "about to fail" in results[1].output_tail  # stderr is captured with stdout
    assert not results[1].ok
    assert not (work / "never").exists()
    assert "about to fail" in log_of(work)


def test_timeout_kills_the_whole_process_group(work: Path) -> None:
    started = time.monotonic()
    results = run(["echo before; sleep 30 & echo $! > bg.pid; sleep 30", "touch never"], work, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    [result] = results
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out
    assert "timed out after 1s" in result.output_tail
    assert "before" in result.output_tail
    assert 1 <= result.duration < 10
    assert not (work / "never").exists()
    background = int((work / "bg.pid").read_text())
    assert _dies_soon(background)


def test_background_processes_do_not_outlive_their_hook(work: Path) -> None:
    started = time.monotonic()
    [result] = run(["sleep 30 & echo $! > bg.pid; echo done"], work)
    assert result.exit_code == 0
    assert time.monotonic() - started < 10
    assert _dies_soon(int((work / "bg.pid").read_text()))


def test_a_hook_that_closes_its_output_still_finishes(work: Path) -> None:
    [result] = run(["exec >/dev/null 2>&1; sleep 0.2; exit 5"], work)
    assert result.exit_code == 5


def test_log_holds_the_full_output_and_tail_the_last_4_kib(work: Path) -> None:
    log = work.parent / "build.log"
    log.write_text("earlier step\n")
    results = run(["seq 1 20000", "echo second hook"], work)
    text = log.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    numbers = "".join(f"{i}\n" for i in range(1, 20001))
    assert f"$ seq 1 20000\n{numbers}$ echo second hook\nsecond hook\n" in text
    assert len(results[0].output_tail.encode()) == TAIL_BYTES
    assert numbers.endswith(results[0].output_tail)
    assert sum(r.log_bytes for r in results) == log.stat().st_size - len("earlier step\n")


def test_binary_output_does_not_break_the_tail(work: Path) -> None:
    [result] = run(["printf 'ok \\377\\376 end\\n'"], work)
    assert result.exit_code == 0
    assert result.output_tail.startswith("ok ") and result.output_tail.endswith(" end\n")


def test_command_not_found_is_127(work: Path) -> None:
    [result] = run(["definitely-not-a-command-ferry"], work)
    assert result.exit_code == 127
    assert "not found" in result.output_tail


def test_killed_by_a_signal_reports_128_plus_signal(work: Path) -> None:
    [result] = run(["kill -9 $$"], work)
    assert result.exit_code == 128 + 9


def test_missing_cwd_fails_the_hook_not_the_builder(tmp_path: Path) -> None:
    [result] = run_hooks(["true"], cwd=tmp_path / "missing", env={}, timeout=5, log_path=tmp_path / "log")
    assert result.exit_code == 127
    assert "cannot start hook" in result.output_tail


def test_no_hooks_is_no_results(work: Path) -> None:
    assert run([], work) == []


@pytest.mark.parametrize("env", [{"BAD NAME": "x"}, {"A=B": "x"}, {"OK": "nul\0byte"}])
def test_invalid_env_is_refused(work: Path, env: dict[str, str]) -> None:
    with pytest.raises(BuildError):
        run(["true"], work, env=env)


def _dies_soon(pid: int, within: float = 5.0) -> bool:
    """SIGKILL is asynchronous: poll until the process is gone or a zombie."""
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"
