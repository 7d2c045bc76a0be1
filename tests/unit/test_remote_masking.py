"""``services.agent.remote.masked``: a host step's output and detail with secret values as ``***``."""

from __future__ import annotations

from ferry.domain.masking import Masker
from services.agent.remote import StepResult, masked

VALUE = "host-secret-42abcdef"


def test_output_and_nested_detail_are_masked() -> None:
    detail = {"attempts": [{"reason": f"exit 1: {VALUE}", "passed": False}], "kind": "command", "n": 1}
    result = StepResult(1, f"line\n{VALUE}\n", 0.5, detail)
    out = masked(result, Masker([VALUE]))
    assert out.output == "line\n***\n"
    assert out.detail == {"attempts": [{"reason": "exit 1: ***", "passed": False}], "kind": "command", "n": 1}
    assert (out.exit_code, out.duration) == (1, 0.5)


def test_a_value_cut_by_truncation_is_masked_at_the_front() -> None:
    text = "[ferry] output truncated, last 64 KiB follow\n" + VALUE[-6:] + " and then " + VALUE
    out = masked(StepResult(0, text, 0.1), Masker([VALUE]))
    assert out.output == "[ferry] output truncated, last 64 KiB follow\n*** and then ***"


def test_without_secrets_the_result_is_the_same_object() -> None:
    result = StepResult(0, "x", 0.1)
    assert masked(result, Masker()) is result
