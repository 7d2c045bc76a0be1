"""The CLI sends FERRY_TOKEN to a real gateway with auth on; a revoked token is a clear error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ferry.cli.main import app as cli
from ferry.domain import auth
from ferry.local.natsserver import NatsServer, free_port
from tests.integration.auth_harness import secured_settings
from tests.integration.test_cli_release import LiveGateway


# --- the CLI --------------------------------------------------------------------------
def test_cli_sends_ferry_token(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry.db.engine import upgrade
    from tests.integration.api_harness import project_body, ssh_keypair

    db = f"sqlite:///{tmp_path / 'ferry.db'}"
    upgrade(db)
    admin = auth.new_token()
    settings = secured_settings(tmp_path, nats_server.url, db, bootstrap_token=admin, http_port=free_port())
    with (
        LiveGateway(settings) as gw,
        httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {admin}"}) as http,
    ):
        private, public = ssh_keypair()
        for path, body in (
            ("/api/credentials", {"name": "k", "kind": "ssh_key", "secret": private}),
            ("/api/hosts", {"name": "web1", "address": "127.0.0.2", "credential": "k", "host_key": public}),
            ("/api/projects", project_body("shop")),
            ("/api/projects/shop/environments", {"name": "prod", "hosts": ["web1"]}),
        ):
            assert http.post(path, json=body).status_code == 201
        monkeypatch.setenv("FERRY_URL", gw.url)
        monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FERRY_DATABASE_URL", db)
        monkeypatch.delenv("FERRY_TOKEN", raising=False)
        runner = CliRunner()
        args = ["release", "create", "--project", "shop", "--env", "prod", "--ref", "main"]

        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and "UNAUTHENTICATED" in result.stderr

        # ferry token create works on the database directly (bootstrapping) and prints the token once.
        made = runner.invoke(cli, ["token", "create", "ci-bot", "--role", "deployer"])
        assert made.exit_code == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("fry_") and "shown only now" in made.stderr
        listed = runner.invoke(cli, ["token", "list"])
        assert listed.exit_code == 0 and "ci-bot" in listed.stdout and token not in listed.stdout

        monkeypatch.setenv("FERRY_TOKEN", token)
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        rid = result.stdout.strip()
        assert http.get(f"/api/releases/{rid}").json()["requested_by"] == "ci-bot"

        assert runner.invoke(cli, ["token", "revoke", "ci-bot"]).exit_code == 0
        result = runner.invoke(cli, ["release", "show", rid])
        assert result.exit_code == 2 and "revoked" in result.stderr
