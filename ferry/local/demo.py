"""``ferry up --demo``: one local sshd target and a registered demo project, ready to release."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ferry.infra.settings import Settings
from ferry.local.demoapp import health_url, make_sample_repo, restart_command
from ferry.local.localsshd import SshdHost, harness_unavailable_reason
from ferry.local.natsserver import free_port

PROJECT, ENVIRONMENT, HOST, CREDENTIAL = "demo", "local", "demo-host", "demo-key"


class DemoError(Exception):
    pass


def _upsert(api: httpx.Client, collection: str, name: str, body: dict[str, object]) -> None:
    r = api.post(collection, json=body)
    if r.status_code == 409:
        r = api.patch(f"{collection}/{name}", json={k: v for k, v in body.items() if k != "name"})
    if r.status_code >= 400:
        raise DemoError(f"registering {collection}/{name} failed: {r.status_code} {r.text}")


def _auth_headers(settings: Settings) -> dict[str, str]:
    """``FERRY_TOKEN`` (else the bootstrap admin token) for a gateway with auth on; none needed off."""
    token = settings.token or settings.bootstrap_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def setup_demo(settings: Settings, portal_url: str) -> tuple[list[str], Callable[[], None]]:
    """Start the demo host and register project, environment and host. Returns lines to print
    and a function that stops the host."""
    reason = harness_unavailable_reason()
    if reason:
        raise DemoError(f"the demo target cannot start: {reason}")
    root = settings.home / "demo"
    host = SshdHost(root / "host").start()
    repo_dir = root / "repo"
    if (repo_dir / ".git").exists():
        from ferry.local.demoapp import SampleRepo

        repo = SampleRepo(repo_dir)
    else:
        repo = make_sample_repo(repo_dir)
        repo.commit("hello from ferry's demo (v1)")
    app_port = free_port(host.address)
    api = httpx.Client(base_url=portal_url.rstrip("/"), timeout=30, headers=_auth_headers(settings))
    try:
        _upsert(
            api,
            "/api/credentials",
            CREDENTIAL,
            {"name": CREDENTIAL, "kind": "ssh_key", "secret": host.client_key_pem},
        )
        _upsert(
            api,
            "/api/hosts",
            HOST,
            {
                "name": HOST,
                "address": host.address,
                "port": host.port,
                "user": "root",
                "credential": CREDENTIAL,
                "host_key": host.host_key_line,
                "host_key_policy": "pinned",
            },
        )
        _upsert(
            api,
            "/api/projects",
            PROJECT,
            {
                "name": PROJECT,
                "repo_url": repo.url,
                "deploy_path": "/srv/demo",
                "keep_releases": 3,
                "build_hooks": ["echo building $FERRY_COMMIT"],
                "shared_dirs": ["logs"],
                "restart": restart_command(app_port),
                "health": {
                    "kind": "http",
                    "target": health_url(app_port),
                    "timeout": 2,
                    "retries": 20,
                    "interval": 0.25,
                },
            },
        )
        _upsert(
            api,
            f"/api/projects/{PROJECT}/environments",
            ENVIRONMENT,
            {"name": ENVIRONMENT, "hosts": [HOST], "concurrency": 1},
        )
    except Exception:
        host.stop()
        raise
    finally:
        api.close()
    lines = [
        f"demo: host {HOST} is sshd on {host.address}:{host.port} (private /srv), app on port {app_port}",
        f"demo: repository {repo.url} (commit more with git -C {repo_dir} commit)",
        f"demo: release it with: ferry release create --project {PROJECT} --env {ENVIRONMENT} "
        "--ref main --watch",
        f"demo: or press Release on {portal_url.rstrip('/')}/projects/{PROJECT}",
    ]
    return lines, host.stop
