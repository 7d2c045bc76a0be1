"""Settings: every FERRY_* variable is a field, read nowhere else, documented from the fields."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from ferry.infra.settings import SECTIONS, Settings, documented
from scripts import gen_settings_doc

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("ferry", "services", "scripts") for p in (ROOT / d).rglob("*.py")]
ENV_READ = re.compile(r"""(?:environ(?:\.get)?\s*[(\[]|getenv\s*\()\s*["'](FERRY_[A-Z0-9_]+)""")
TYPER_ENV = re.compile(r"""envvar\s*=\s*["'](FERRY_[A-Z0-9_]+)""")
NAMES = {f.metadata["env"] for f in fields(Settings)}


def test_the_operations_table_is_generated_from_the_fields() -> None:
    text = gen_settings_doc.DOC.read_text()
    assert gen_settings_doc.render(text) == text, "run: python scripts/gen_settings_doc.py"
    for name in NAMES:
        assert f"| `{name}` |" in text


def test_no_ferry_variable_is_read_outside_settings() -> None:
    readers = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in SOURCES
        if path.parent.name != "settings"  # the package that reads them
        for name in ENV_READ.findall(path.read_text())
    }
    assert readers == set(), "read these through ferry.infra.settings.Settings"


def test_cli_options_read_only_documented_variables() -> None:
    named = {name for path in SOURCES for name in TYPER_ENV.findall(path.read_text())}
    assert named and named <= NAMES


def test_every_field_has_a_variable_a_section_and_help() -> None:
    envs = [f.metadata["env"] for f in documented()]
    assert len(envs) == len(set(envs)) == len(fields(Settings))
    for f in documented():
        assert f.metadata["env"].startswith("FERRY_")
        assert f.metadata["section"] in SECTIONS
        assert len(f.metadata["help"]) > 10


def test_secrets_never_appear_in_a_repr() -> None:
    secrets = {
        "database_url": "postgresql://ferry:db-pass-123@db/ferry",
        "secret_key": "key-value-456",
        "previous_secret_key": "old-key-789",
        "bootstrap_token": "bootstrap-abc",
        "ws_token": "ws-token-def",
        "token": "fry_cli_token_ghi",
    }
    shown = repr(Settings(**secrets))  # type: ignore[arg-type]
    for value in secrets.values():
        assert value not in shown
    secret_fields = {f.name for f in fields(Settings) if f.metadata["secret"]}
    assert secret_fields == set(secrets)
    assert all(not f.repr for f in fields(Settings) if f.metadata["secret"])


def test_from_env_reads_every_section() -> None:
    s = Settings.from_env(
        {
            "FERRY_HOME": "/tmp/ferry-home",
            "FERRY_STREAM_REPLICAS": "3",
            "FERRY_WORK_ACK_WAIT": "2.5",
            "FERRY_HOOK_BIND_RO": "/opt/node:/opt/go",
            "FERRY_WS_QUEUE": "50",
            "FERRY_WEBHOOK_RETRY_DELAYS": "1, 2,3",
            "FERRY_ALLOWED_HOSTS": "Ferry.Example, *",
            "FERRY_URL": "http://gw:9000",
            "FERRY_TOKEN": "t",
            "FERRY_AUTH": "Token",
            "USER": "alice",
        }
    )
    assert s.home == Path("/tmp/ferry-home")
    assert (s.stream_replicas, s.work_ack_wait, s.ws_queue) == (3, 2.5, 50)
    assert s.hook_bind_ro == (Path("/opt/node"), Path("/opt/go"))
    assert s.webhook_retry_delays == (1.0, 2.0, 3.0)
    assert s.allowed_hosts == ("ferry.example", "*")
    assert (s.url, s.token, s.user, s.auth) == ("http://gw:9000", "t", "alice", "token")


def test_unset_and_empty_keep_the_defaults() -> None:
    s = Settings.from_env({"FERRY_WS_PORT": "", "FERRY_AGENT_GROUP": ""})
    default = Settings()
    assert (s.ws_port, s.agent_group, s.stream_replicas) == (default.ws_port, "default", 1)
    assert s.agent_name.startswith("agent-")
    assert s.hook_sandbox == "bwrap" and s.webhook_retry_delays == (5.0, 15.0, 30.0, 60.0, 180.0)


@pytest.mark.parametrize(
    "name, raw",
    [
        ("FERRY_STREAM_REPLICAS", "0"),
        ("FERRY_HTTP_PORT", "eighty"),
        ("FERRY_WORK_ACK_WAIT", "-1"),
        ("FERRY_WEBHOOK_RETRY_DELAYS", "5,soon"),
        ("FERRY_WEBHOOK_RETRY_DELAYS", "5,-1"),
        ("FERRY_AGENT_GROUP", "EU!"),
        ("FERRY_AUTH", "maybe"),
        ("FERRY_MAX_BODY", "10"),
    ],
)
def test_a_bad_value_stops_with_the_variables_name(name: str, raw: str) -> None:
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: raw})
