"""Build hooks run as real shell processes, in the real bubblewrap sandbox (as the ferry-hook user)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.domain.errors import BuildError
from services.builder.hooks import TAIL_BYTES, TIMEOUT_EXIT_CODE, HookResult, run_hooks
from services.builder.sandbox import BUILD_DIR, Sandbox

pytestmark = pytest.mark.skipif(Sandbox().problem() is not None, reason=str(Sandbox().problem()))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def run(
    commands: list[str],
    work: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    sandbox: Sandbox | None = None,
) -> list[HookResult]:
    log = work.parent / "build.log"
    return run_hooks(commands, cwd=work, env=env or {}, timeout=timeout, log_path=log, sandbox=sandbox)


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
    assert (work / "first.txt").read_text() == f"r-42 in {BUILD_DIR}\n"  # the tree, mounted at /build
    tail = results[1].output_tail
    assert f"r-42 in {BUILD_DIR}" in tail
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
    results = run(["echo before; sleep 30.101 & sleep 30", "touch never"], work, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    [result] = results
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out
    assert "timed out after 1s" in result.output_tail
    assert "before" in result.output_tail
    assert 1 <= result.duration < 10
    assert not (work / "never").exists()
    assert _gone_soon(["sleep", "30.101"])


def test_background_processes_do_not_outlive_their_hook(work: Path) -> None:
    started = time.monotonic()
    [result] = run(["sleep 30.102 & echo done"], work)
    assert result.exit_code == 0
    assert time.monotonic() - started < 10
    assert _gone_soon(["sleep", "30.102"])


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


def _gone_soon(argv: list[str], within: float = 5.0) -> bool:
    """SIGKILL is asynchronous: poll until no live process on this machine runs ``argv``.

    The hook's pids are those of its own PID namespace, so the host's /proc is searched by command.
    """
    deadline = time.monotonic() + within
    while _running(argv):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _running(argv: list[str]) -> bool:
    wanted = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != wanted:
                continue
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue  # exited while we looked
        if state != "Z":  # a zombie is dead for our purposes
            return True
    return False


# --- the sandbox -----------------------------------------------------------------
def test_hooks_run_as_the_hook_user_and_own_the_tree(work: Path) -> None:
    (work / "committed.txt").write_text("x")
    [result] = run(["id -un; touch made-by-hook; ls -ln committed.txt"], work)
    assert result.exit_code == 0, result.output_tail
    expected = "ferry-hook" if os.geteuid() == 0 else "nobody"
    assert result.output_tail.splitlines()[0] == expected
    if os.geteuid() == 0:
        hook_uid = Sandbox().owner()
        assert hook_uid is not None and hook_uid[0] != 0
        assert (work / "made-by-hook").stat().st_uid == hook_uid[0]


def test_only_the_tree_is_writable_and_the_builders_files_are_absent(work: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("the-key")
    [first] = run(
        [f"cat {home}/secret.key; ls {tmp_path}; touch /usr/x /etc/x; echo x > /tmp/scratch && echo tmp-ok"],
        work,
    )
    assert "the-key" not in first.output_tail
    assert "No such file or directory" in first.output_tail
    assert "Read-only file system" in first.output_tail or "Permission denied" in first.output_tail
    assert "tmp-ok" in first.output_tail
    assert not Path("/usr/x").exists() and not Path("/etc/x").exists()


def test_the_builders_processes_are_out_of_sight(work: Path) -> None:
    [result] = run(["ls /proc | grep -c '^[0-9]*$'; cat /proc/1/environ /proc/$PPID/environ"], work)
    assert int(result.output_tail.splitlines()[0]) < 10
    assert f"/proc/{os.getpid()}" not in result.output_tail
    assert "PATH=" not in result.output_tail.splitlines()[-1]


@pytest.fixture
def tools() -> Iterator[Path]:
    """A directory others may read (pytest's tmp_path is root's own), like /opt/<toolchain>."""
    path = Path(tempfile.mkdtemp(prefix="ferry-tools-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_hidden_path_inside_a_bound_directory_is_covered(work: Path, tools: Path) -> None:
    (tools / "private").mkdir(parents=True)
    (tools / "private" / "secret").write_text("hidden-value")
    (tools / "token").write_text("hidden-token")
    (tools / "visible").write_text("visible-value")
    sandbox = Sandbox(extra_ro=(tools,), hidden=(tools / "private", tools / "token"))
    [result] = run(
        [f"cat {tools}/visible; cat {tools}/private/secret {tools}/token; echo end"], work, sandbox=sandbox
    )
    assert "visible-value" in result.output_tail
    assert "hidden-value" not in result.output_tail and "hidden-token" not in result.output_tail


def test_network_off_gives_the_hooks_a_loopback_of_their_own(work: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        connect = f"socket.create_connection(('127.0.0.1', {port}), 2)"
        probe = f"python3 -c \"import socket; {connect}; print('reached')\""
        log = work.parent / "build.log"
        on = run_hooks([probe], cwd=work, env={}, timeout=20, log_path=log)
        off = run_hooks([probe], cwd=work, env={}, timeout=20, log_path=log, network=False)
    assert on[0].exit_code == 0 and "reached" in on[0].output_tail
    assert off[0].exit_code != 0 and "reached" not in off[0].output_tail


def test_limits_are_set_for_every_hook(work: Path) -> None:
    [result] = run(["ulimit -t; ulimit -c; grep 'Max processes' /proc/self/limits"], work, timeout=5)
    cpu, core, processes = result.output_tail.splitlines()
    assert (cpu, core) == ("6", "0")  # CPU seconds: the hook's timeout, rounded up
    assert processes.split()[2:4] == [str(Sandbox().max_processes)] * 2


def test_the_log_is_capped_and_the_tail_kept(work: Path) -> None:
    log = work.parent / "build.log"
    results = run(["seq 1 100000", "echo after"], work, sandbox=Sandbox(log_limit=20_000))
    assert [r.exit_code for r in results] == [0, 0]
    text = log.read_text()
    assert text.startswith("$ seq 1 100000\n1\n2\n")
    assert "ferry: log truncated here" in text
    assert log.stat().st_size < 20_000 + 200
    assert "after" not in text  # nothing more is written once the cap is reached
    numbers = "".join(f"{i}\n" for i in range(1, 100001))
    assert numbers.endswith(results[0].output_tail) and len(results[0].output_tail) == TAIL_BYTES
    assert results[1].output_tail == "after\n"
    assert sum(r.log_bytes for r in results) == log.stat().st_size


def test_no_sandbox_tool_is_a_clear_refusal_and_nothing_runs(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a machine without bubblewrap
    with pytest.raises(BuildError) as caught:
        run(["touch ran"], work)
    assert "bwrap" in caught.value.message and "FERRY_HOOK_SANDBOX=off" in caught.value.message
    assert not (work / "ran").exists()


def test_a_missing_hook_user_is_a_clear_refusal(work: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root builder switches to the hook user")
    with pytest.raises(BuildError, match="make system-deps"):
        run(["touch ran"], work, sandbox=Sandbox(user="ferry-no-such-user"))
    assert not (work / "ran").exists()


def test_sandbox_off_must_be_explicit_and_is_logged(
    work: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FERRY_HOOK_SANDBOX", "off")
    sandbox = Sandbox.from_env()
    with caplog.at_level("WARNING", logger="ferry.builder.sandbox"):
        [result] = run(["pwd"], work, sandbox=sandbox)
    assert result.output_tail == f"{work}\n"
    assert "UNSANDBOXED" in caplog.text
    monkeypatch.setenv("FERRY_HOOK_SANDBOX", "no")
    with pytest.raises(BuildError, match="FERRY_HOOK_SANDBOX"):
        Sandbox.from_env()
