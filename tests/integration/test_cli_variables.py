"""``ferry variables …`` against a live gateway: the value only ever travels on stdin and in the PUT body."""

# ruff: noqa: F401, F811  (the `gateway` fixture is imported by name)
from __future__ import annotations

import httpx
from typer.testing import CliRunner

from ferry.cli.main import app as cli
from tests.integration.test_cli_release import gateway

VALUE = "cli-secret-" + "7" * 12


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_set_list_delete(gateway: httpx.Client) -> None:
    code, out, err = run("variables", "set", "shop", "API_TOKEN", stdin=VALUE + "\n")
    assert code == 0, err
    assert out.strip() == "shop: API_TOKEN set"
    code, out, err = run("variables", "set", "shop", "API_TOKEN", stdin=VALUE + "\n")
    assert code == 0 and out.strip() == "shop: API_TOKEN replaced", err

    code, out, err = run("variables", "list", "shop")
    assert code == 0 and out.startswith("API_TOKEN\tupdated ") and VALUE not in out
    code, out, _ = run("variables", "list", "shop", "--json")
    assert code == 0 and '"name": "API_TOKEN"' in out and VALUE not in out

    code, out, err = run("variables", "set", "shop", "FERRY_X", stdin=VALUE)
    assert code == 2 and "(field: name)" in err and VALUE not in err
    code, out, err = run("variables", "set", "shop", "SHORT", stdin="abc\n")
    assert code == 2 and "masked" in err

    code, out, err = run("variables", "delete", "shop", "API_TOKEN")
    assert code == 0 and out.strip() == "shop: API_TOKEN deleted", err
    code, out, err = run("variables", "delete", "shop", "API_TOKEN")
    assert code == 2 and "404" in err
    assert gateway.get("/api/projects/shop/variables").json() == {"variables": []}
