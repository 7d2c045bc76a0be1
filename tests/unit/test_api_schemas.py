"""The API's pydantic models: strict input, fields named in errors, ferry's own validators reused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy import CheckConstraint

from services.gateway.api.credentials_schema import CredentialIn
from services.gateway.api.environments_schema import EnvironmentIn
from services.gateway.api.hosts_schema import HostIn
from services.gateway.api.projects_schema import ProjectIn
from services.gateway.api.releases import new_release_id
from services.gateway.api.releases_schema import ReleaseIn, ReleaseQuery
from services.gateway.errors import validation_body


def _errors(model: type, data: dict) -> dict:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return validation_body(info.value)["error"]


def _key() -> tuple[str, str]:
    k = Ed25519PrivateKey.generate()
    private = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " admin@laptop"


def test_release_ref_uses_the_builder_rules_and_keeps_their_code() -> None:
    err = _errors(ReleaseIn, {"project": "p", "environment": "e", "ref": "--upload-pack=touch /tmp/x"})
    assert (err["field"], err["code"]) == ("ref", "INVALID_REF")
    assert "starts with '-'" in err["message"]
    assert (
        ReleaseIn.model_validate({"project": "p", "environment": "e", "ref": "release/1.2"}).ref
        == "release/1.2"
    )


def test_missing_fields_are_each_named() -> None:
    err = _errors(ReleaseIn, {})
    assert {d["field"] for d in err["details"]} == {"project", "environment", "ref"}


def test_input_is_strict() -> None:
    assert _errors(EnvironmentIn, {"name": "e", "hosts": ["h"], "concurrency": "2"})["field"] == "concurrency"
    assert _errors(EnvironmentIn, {"name": "e", "hosts": ["h"], "require_approval": 1})["field"] == (
        "require_approval"
    )
    assert _errors(EnvironmentIn, {"name": "e", "hosts": ["h"], "other": 1})["field"] == "other"


def test_ssh_key_credentials_must_parse_and_fingerprint() -> None:
    private, _ = _key()
    cred = CredentialIn.model_validate({"name": "k", "kind": "ssh_key", "secret": private})
    assert cred.summary().startswith("ssh-ed25519 SHA256:")
    err = _errors(CredentialIn, {"name": "k", "kind": "ssh_key", "secret": "-----BEGIN nothing"})
    assert err["field"] == "secret" and "nothing" not in err["message"]
    assert (
        CredentialIn.model_validate({"name": "k", "kind": "password", "secret": "x"}).summary() == "password"
    )


def test_host_key_is_normalised_and_pinned_needs_one() -> None:
    _, public = _key()
    host = HostIn.model_validate({"name": "h", "address": "10.0.0.1", "credential": "k", "host_key": public})
    assert host.host_key == " ".join(public.split()[:2])
    assert _errors(HostIn, {"name": "h", "address": "h", "credential": "k"})["field"] == "host_key"
    tofu = HostIn.model_validate({"name": "h", "address": "h", "credential": "k", "host_key_policy": "tofu"})
    assert tofu.host_key is None
    assert (
        _errors(HostIn, {"name": "h", "address": "--x", "credential": "k", "host_key_policy": "tofu"})[
            "field"
        ]
        == "address"
    )


def test_project_paths_and_urls_use_ferry_validators() -> None:
    base = {"name": "p", "repo_url": "https://example.com/r.git", "deploy_path": "/srv/p"}
    assert ProjectIn.model_validate(base).health.kind == "none"
    assert _errors(ProjectIn, {**base, "deploy_path": "/srv/../x"})["code"] == "INVALID_PATH"
    assert _errors(ProjectIn, {**base, "repo_url": "ext::sh -c x"})["field"] == "repo_url"
    err = _errors(ProjectIn, {**base, "shared_dirs": ["ok", "../no"]})
    assert err["field"] == "shared_dirs.1"
    assert _errors(ProjectIn, {**base, "health": {"kind": "http", "target": "x"}})["field"] == "health.target"


def test_release_query_parses_strings() -> None:
    assert ReleaseQuery.model_validate({"limit": "5"}).limit == 5
    assert _errors(ReleaseQuery, {"limit": "0"})["field"] == "limit"


def test_release_ids_sort_by_time_and_fit_the_subject_pattern() -> None:
    from datetime import UTC, datetime, timedelta

    t = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    a, b = new_release_id(t), new_release_id(t + timedelta(milliseconds=1))
    assert a.startswith("r20250102030405678-") and a < b
    from ferry.infra.eventstore import RELEASE_ID

    assert RELEASE_ID.match(a)


def test_integers_written_as_whole_floats_are_integers_and_nothing_else_is() -> None:
    body = {"name": "e", "hosts": ["h"]}
    assert EnvironmentIn.model_validate({**body, "concurrency": 3.0}).concurrency == 3
    assert _errors(EnvironmentIn, {**body, "concurrency": 2.5})["field"] == "concurrency"
    assert _errors(EnvironmentIn, {**body, "concurrency": True})["field"] == "concurrency"
    schema = EnvironmentIn.model_json_schema()["properties"]["concurrency"]
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 1, 1000)


def test_enumerations_are_the_vocabulary_everywhere() -> None:
    """The API's choices and the tables' CHECK constraints come from ferry.domain.vocabulary,
    and the migrations that made the constraints allow the same words."""
    from ferry.db import models
    from ferry.domain import vocabulary as v
    from services.gateway.api import api_document

    schemas = api_document(False)["components"]["schemas"]
    choices = {
        ("CredentialIn", "kind"): v.CREDENTIAL_KINDS,
        ("HostIn", "host_key_policy"): v.HOST_KEY_POLICIES,
        ("EnvironmentIn", "strategy"): v.STRATEGIES,
        ("EnvironmentIn", "on_busy"): v.ON_BUSY,
        ("WebhookIn", "kind"): v.WEBHOOK_KINDS,
        ("TokenIn", "role"): v.ROLES,
        ("ProjectIn", "artifact_format"): v.ARTIFACT_FORMATS,
    }
    for (model, field), words in choices.items():
        assert schemas[model]["properties"][field]["enum"] == list(words), (model, field)
    versions = Path(models.__file__).parent.parent / "migrations" / "versions"
    migrations = "".join(p.read_text() for p in versions.glob("*.py"))
    for table, column, words in (
        (models.Credential, "kind", v.CREDENTIAL_KINDS),
        (models.Host, "host_key_policy", v.HOST_KEY_POLICIES),
        (models.ApiToken, "role", v.ROLES),
        (models.Webhook, "kind", v.WEBHOOK_KINDS),
        (models.WebhookDelivery, "status", v.DELIVERY_STATUSES),
    ):
        checks = [str(c.sqltext) for c in table.__table__.constraints if isinstance(c, CheckConstraint)]
        assert checks == [v.sql_in(column, words)], table
        made = re.search(rf'"{column} IN \(([^)]*)\)", name=op\.f\("ck_{table.__tablename__}_', migrations)
        assert made is not None and set(re.findall(r"'(\w+)'", made[1])) == set(words), table


def test_patterns_are_read_as_json_schema_reads_them() -> None:
    """``$`` ends the text: a value with a final newline fails ``^…$`` as it does in the document."""
    base = {"name": "p", "repo_url": "https://example.com/r.git", "deploy_path": "/srv/p"}
    for target in ("http://127.0.0.1:8080/health\n", "http://[86]/health"):
        health = {"kind": "http", "target": target}
        assert _errors(ProjectIn, {**base, "health": health})["field"] == "health.target"
    ok = {"kind": "http", "target": "http://[fe80::1]:8080/health"}
    assert ProjectIn.model_validate({**base, "health": ok}).health.target == ok["target"]


def test_a_command_or_http_health_check_needs_its_target_in_the_schema_too() -> None:
    base = {"name": "p", "repo_url": "https://example.com/r.git", "deploy_path": "/srv/p"}
    assert _errors(ProjectIn, {**base, "health": {"kind": "command"}})["field"] == "health.target"
    conditions = ProjectIn.model_json_schema()["$defs"]["HealthIn"]["allOf"]
    assert all(c["then"]["required"] == ["target"] for c in conditions)
