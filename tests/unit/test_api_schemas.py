"""The API's pydantic models: strict input, fields named in errors, ferry's own validators reused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

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
