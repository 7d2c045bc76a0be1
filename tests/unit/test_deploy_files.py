"""The deploy files are checked as files (no Docker engine here): they must point at real things."""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"gateway", "builder", "agent", "notifier"}


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
