"""schemathesis against the gateway's own OpenAPI document, every check on, on the real app.

The gateway runs as deployed (``python -m services.gateway``: the API, the projector and the
orchestrator, on a real nats-server and a SQLite file) and ``st run`` (schemathesis 4) reads
``/api/openapi.json`` from it. ``--checks all``: no 5xx, every status and header documented,
answers matching their schemas, schema-valid input accepted and schema-invalid input refused,
a created resource readable and a deleted one gone, and (auth on) nothing answered without a
token. Phases: coverage (values at and past every bound the schema states), fuzzing, and
stateful sequences that follow the document's OpenAPI links (create a project, then read,
change and delete it, add an environment to it…).

Two runs at once, one gateway each: authentication off (the single-user default) with every
phase, and on (``FERRY_AUTH=token``, an admin token from the database) with fuzzing and
sequences. The seed is fixed, so a failure reproduces; the report prints its statistics.

Where JSON Schema cannot state a rule, the document names it as a ``format`` and this module
(also the run's ``SCHEMATHESIS_HOOKS``) gives schemathesis a generator of valid values:
``ssh-public-key`` and ``ssh-private-key``. One operation answers a 5xx by design here:
``GET /api/projects/{name}/refs`` asks a builder and none runs, so it answers the documented
503 (502/504 when a builder answers with an error or too late); the run is told so.

By hand, against a gateway of your own (``CONFIG`` below in a file)::

    SCHEMATHESIS_HOOKS=tests.security.test_schemathesis st --config-file st.toml run \\
        http://127.0.0.1:8000/api/openapi.json --checks all
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from ferry.db.engine import upgrade
from ferry.local.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "fry_schemathesis-admin-token-0123456789"  # noqa: S105 - a test token
MAX_EXAMPLES = 4
STATEFUL_EXAMPLES = 40
SEED = "20261130"
RUN_TIMEOUT = 80.0
CONFIG = f"""
[generation]
database = "none"
max-examples = {MAX_EXAMPLES}

[phases.stateful.generation]
max-examples = {STATEFUL_EXAMPLES}

[[operations]]
include-path = "/api/projects/{{name}}/refs"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
"""


def _key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_line(seed: bytes) -> str:
    public = (
        _key(seed)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return public.decode()


def _private_text(seed: bytes) -> str:
    private = _key(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return private.decode()


_SEEDS = st.binary(min_size=32, max_size=32)
_COMMENT = st.sampled_from(["", " admin@laptop", " deploy"])
schemathesis.openapi.format("ssh-public-key", st.builds(str.__add__, _SEEDS.map(_public_line), _COMMENT))
schemathesis.openapi.format("ssh-private-key", _SEEDS.map(_private_text))


@dataclass
class Run:
    """One ``st run`` against one gateway of its own, started in the background."""

    phases: str
    process: subprocess.Popen[bytes]
    output: Path
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        """The run's statistics; the test fails unless it found nothing and really ran."""
        try:
            self.process.wait(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        report = self.output.read_text(errors="replace")
        summary = report[report.find("SUMMARY") :]
        print(summary, f"(st run took {time.monotonic() - self.started:.1f}s)")
        assert self.process.returncode == 0, report[-20000:]
        for phase in self.phases.split(","):
            assert f"✅ {phase.capitalize()}" in summary, summary  # it ran, and found nothing
        counts = re.search(r"(\d+) generated, (\d+) passed", summary)
        assert counts is not None and counts[1] == counts[2] and int(counts[1]) > 200, summary
        return summary


def _start(base: str, directory: Path, phases: str, *headers: str) -> Run:
    """``st run`` against ``base``: every check, the given phases, a fixed seed (reproducible)."""
    config = directory / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "run",
        f"{base}/api/openapi.json",
        "--url",
        base,
        "--checks",
        "all",
        "--phases",
        phases,
        "--seed",
        SEED,
        "--no-color",
        *(arg for h in headers for arg in ("-H", h)),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.test_schemathesis", "PYTHONPATH": str(ROOT)}
    output = directory / "st-report.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=directory
        )
    return Run(phases, process, output)


def _gateway(directory: Path, auth: str, stack: contextlib.ExitStack) -> str:
    """The gateway as deployed (``python -m services.gateway``: the API, the projector and the
    orchestrator) in a process of its own, on a nats-server and a SQLite file."""
    nats = NatsServer(directory / "nats")
    nats.start()
    stack.callback(nats.stop)
    db = f"sqlite:///{directory / 'ferry.db'}"
    upgrade(db)
    port = free_port()
    env = {
        **os.environ,
        "FERRY_HOME": str(directory / "home"),
        "FERRY_NATS_URL": nats.url,
        "FERRY_DATABASE_URL": db,
        "FERRY_HTTP_HOST": "127.0.0.1",
        "FERRY_HTTP_PORT": str(port),
        "FERRY_SECRET_KEY": Fernet.generate_key().decode(),
        "FERRY_AUTH": auth,
        "FERRY_BOOTSTRAP_TOKEN": ADMIN_TOKEN if auth == "token" else "",
    }
    with (directory / "gateway.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "services.gateway"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack.callback(_stop, process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, (directory / "gateway.log").read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not become healthy"
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Both runs at once (each waits on its gateway much of the time), one gateway each.

    Auth off runs every phase: boundary values of every bound the schema states, fuzzing and
    sequences. Auth on runs fuzzing and sequences as an admin, and every answer is checked
    against the same request without the token (``ignored_auth``: it must be a 401); the
    bounds are the same as with auth off, so the coverage phase (the slow one) runs there only.
    """
    with contextlib.ExitStack() as stack:
        started: dict[str, Run] = {}
        for auth, phases, headers in (
            ("off", "coverage,fuzzing,stateful", ()),
            ("token", "fuzzing,stateful", (f"Authorization: Bearer {ADMIN_TOKEN}",)),
        ):
            directory = tmp_path_factory.mktemp(f"schemathesis-{auth}")
            started[auth] = _start(_gateway(directory, auth, stack), directory, phases, *headers)
            stack.callback(lambda run=started[auth]: run.process.poll() is None and run.process.kill())
        yield started


def test_schemathesis_finds_nothing_with_auth_off(runs: dict[str, Run]) -> None:
    runs["off"].summary()


def test_schemathesis_finds_nothing_with_auth_on(runs: dict[str, Run]) -> None:
    runs["token"].summary()
