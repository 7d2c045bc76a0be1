"""The deploy files are checked as files (no Docker engine here): they must point at real things,
and run only the commands the test suite runs: the launcher's service table (``ferry up`` starts
exactly these) and ``ferry db upgrade``. tests/integration/test_deploy_start.py starts every one of
them with its Kubernetes manifest's environment; tests/unit/test_k8s.py validates the manifests."""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import yaml

from ferry.infra.signing import public_path
from ferry.local.launcher import SERVICES as LAUNCHED
from services.builder.sandbox import HOOK_USER
from tests.harness.k8s import INSTALL, pods

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"gateway", "builder", "agent", "notifier"}
MIGRATE = ("ferry", "db", "upgrade")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_every_service_on_a_nats_cluster_and_postgres():
    doc = compose()
    services = doc["services"]
    assert SERVICES <= set(services)
    assert {"nats1", "nats2", "nats3", "postgres", "migrate"} <= set(services)
    for name in SERVICES:
        svc = services[name]
        command = svc["command"]
        assert command[:2] == ["python", "-m"] and command[2] == f"services.{name}"
        assert importlib.util.find_spec(command[2]) is not None
        env = svc["environment"]
        urls = env["FERRY_NATS_URL"].split(",")
        assert [u.split("//")[1].split(":")[0] for u in urls] == ["nats1", "nats2", "nats3"]
        assert env["FERRY_STREAM_REPLICAS"] == "3"
        assert env["FERRY_DATABASE_URL"].startswith("postgresql://")
        assert "FERRY_SECRET_KEY" in env
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["agent"]["deploy"]["replicas"] >= 2
    assert services["migrate"]["command"] == ["ferry", "db", "upgrade"]


def test_nats_cluster_config_routes_every_node():
    conf = (ROOT / "deploy/nats/cluster.conf").read_text()
    routes = set(re.findall(r"nats-route://(\w+):6222", conf))
    nats_nodes = {n for n in compose()["services"] if n.startswith("nats")}
    assert routes == nats_nodes
    assert "jetstream" in conf


def test_dockerfile_copies_what_exists_and_installs_gojs_from_npm():
    text = (ROOT / "deploy/Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert "npm ci" in text
    assert "node_modules/" in (ROOT / ".gitignore").read_text()


def test_systemd_units_start_real_modules():
    for name in SERVICES:
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(ROOT / f"deploy/systemd/ferry-{name}.service")
        exec_start = unit["Service"]["ExecStart"]
        module = exec_start.split("-m", 1)[1].strip()
        assert module == f"services.{name}"
        assert importlib.util.find_spec(module) is not None


def launcher_commands() -> set[tuple[str, ...]]:
    """What ``ferry up`` runs for each service (``Launcher.spawn``: ``sys.executable -m services.<name>``)."""
    return {("python", "-m", f"services.{name}") for name in LAUNCHED}


def compose_commands() -> dict[str, tuple[str, ...]]:
    """Every ferry container's command in docker-compose.yml, by service."""
    services = compose()["services"]
    return {n: tuple(s["command"]) for n, s in services.items() if str(s.get("image")).startswith("ferry:")}


def k8s_commands() -> dict[str, tuple[str, ...]]:
    """Every ferry container's command (and args) in deploy/k8s, by workload."""
    found = {}
    for workload, pod in pods(INSTALL):
        for c in pod["spec"]["containers"]:
            if not c["image"].startswith("ferry:"):
                continue
            found[f"{workload['metadata']['name']}/{c['name']}"] = (*c["command"], *c.get("args", []))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert "exec" not in c.get(probe, {}), "an exec probe would be a command no test runs"
    return found


def dockerfile_cmd() -> tuple[str, ...]:
    [line] = [x for x in (ROOT / "deploy/Dockerfile").read_text().splitlines() if x.startswith("CMD ")]
    return tuple(json.loads(line.removeprefix("CMD ")))


def test_compose_and_k8s_run_only_the_commands_the_tests_run():
    allowed = launcher_commands() | {MIGRATE}
    compose_cmds, k8s_cmds = compose_commands(), k8s_commands()
    for where, command in [*compose_cmds.items(), *k8s_cmds.items(), ("Dockerfile CMD", dockerfile_cmd())]:
        assert command in allowed, f"{where} runs {command}, which no test runs"
    # and every service the launcher starts is deployed by both, with the migration first
    assert launcher_commands() | {MIGRATE} == set(compose_cmds.values()) == set(k8s_cmds.values())


def test_one_image_at_the_project_version_everywhere():
    for name, svc in compose()["services"].items():
        if "build" in svc:
            assert svc["image"] == f"ferry:{VERSION}", name
        else:
            assert not svc["image"].endswith(":latest"), name
    for workload, pod in pods(INSTALL):
        for c in pod["spec"]["containers"]:
            assert c["image"] == f"ferry:{VERSION}" or not c["image"].startswith("ferry"), c["image"]


def test_compose_gives_the_gateway_its_public_key_beside_the_private_one():
    gateway = compose()["services"]["gateway"]
    key = Path(gateway["environment"]["FERRY_WORK_SIGNING_KEY"])
    targets = {Path("/run/secrets") / (s["target"] if isinstance(s, dict) else s) for s in gateway["secrets"]}
    assert {key, public_path(key)} <= targets  # nothing to write at start on a read-only mount
    for worker in ("builder", "agent"):
        env = compose()["services"][worker]["environment"]
        assert "FERRY_WORK_SIGNING_KEY" not in env
        assert env["FERRY_WORK_PUBLIC_KEY"].startswith("/run/secrets/")


def test_dockerfile_has_the_builder_sandbox_and_its_hook_user():
    text = (ROOT / "deploy/Dockerfile").read_text()
    installed = set(re.search(r"apt-get install -y --no-install-recommends ([^\\&]+)", text)[1].split())
    assert {"bubblewrap", "util-linux", "git"} <= installed  # bwrap; setpriv and prlimit
    lines = text.replace("\\\n", " ").splitlines()
    commands = [c.split() for line in lines for c in line.split("&&") if "useradd" in c]
    assert any(c[-1] == HOOK_USER and "--user-group" in c for c in commands), HOOK_USER
    assert re.search(r"^USER \d+:\d+$", text, re.M), "a numeric user, so runAsNonRoot can verify it"


def test_compose_lets_only_the_builder_make_its_sandbox():
    services = compose()["services"]
    assert set(services["builder"]["security_opt"]) == {
        "seccomp=unconfined",
        "apparmor=unconfined",
        "systempaths=unconfined",
    }
    for name, svc in services.items():
        assert name == "builder" or "security_opt" not in svc, name
        assert "privileged" not in svc and "cap_add" not in svc, name
        assert svc.get("environment", {}).get("FERRY_HOOK_SANDBOX", "bwrap") != "off", name
