"""The portal's reducer under node's own test runner (``node --test tests/js/``): the golden
sequences, the refusal of unknown event types, and the words it takes from ferry_model.json."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_node_runs_the_reducer_tests() -> None:
    node = shutil.which("node")
    assert node, "node (20+) is needed for the portal's reducer tests: `make setup` installs it"
    done = subprocess.run(
        [node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def test_the_model_json_is_generated_from_the_python_models() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/gen_model_json.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
