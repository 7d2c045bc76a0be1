"""deploy/k8s as objects: the kustomizations rendered (they use ``resources`` only, so following
those lists is what ``kubectl apply -k`` applies), and what a pod template says its container sees:
its environment, its mounted Secret keys. Used by tests/unit/test_k8s.py and test_k8s_start.py."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
COMPONENTS = ("gateway", "builder", "agent", "notifier")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
Obj = dict[str, Any]


def load(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    # the only fields this renderer follows; anything else (patches, generators) would be skipped
    assert set(spec) <= {"apiVersion", "kind", "resources"}, directory
    objects: list[Obj] = []
    for entry in spec["resources"]:
        path = (directory / entry).resolve()
        objects += kustomize(path) if path.is_dir() else load(path)
    return objects


KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
SECRETS = {s["metadata"]["name"]: s for s in load(K8S / "secrets.example.yaml")}
NATS_VALUES: Obj = yaml.safe_load((K8S / "nats-values.yaml").read_text())
INSTALL = [o for d in (K8S / "agent-group-example", K8S / "postgres") for o in kustomize(d)]


def of_kind(kind: str, objects: list[Obj] = INSTALL) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def pods(objects: list[Obj] = INSTALL) -> list[tuple[Obj, Obj]]:
    """(workload, pod template) of every workload."""
    return [(o, o["spec"]["template"]) for o in objects if o["kind"] in WORKLOADS]


def component(pod: Obj) -> str:
    return str(pod["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def ferry_pods(name: str | None = None) -> list[tuple[Obj, Obj]]:
    found = [(w, p) for w, p in pods() if p["metadata"]["labels"].get("app.kubernetes.io/name") == "ferry"]
    return [(w, p) for w, p in found if name is None or component(p) == name]


def env_of(pod: Obj) -> dict[str, Any]:
    """Every variable the first container sees: its ConfigMaps' data, then its own env."""
    container = pod["spec"]["containers"][0]
    configmaps = {c["metadata"]["name"]: c["data"] for c in of_kind("ConfigMap")}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def nats_pod_labels() -> dict[str, str]:
    """The labels the NATS chart gives its server pods (its ``nats.selectorLabels``)."""
    name = NATS_VALUES.get("nameOverride") or "nats"
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "nats"}


def all_pod_labels() -> list[dict[str, str]]:
    return [p["metadata"]["labels"] for _, p in pods()] + [nats_pod_labels()]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] in ("In", "NotIn"), expr
        inside = labels.get(expr["key"]) in expr["values"]
        if inside != (expr["operator"] == "In"):
            return False
    return True


def secret_files(pod: Obj) -> dict[str, tuple[str, str]]:
    """Path inside the container -> (Secret, key) for every mounted Secret key."""
    volumes = {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}
    files = {}
    for mount in pod["spec"]["containers"][0].get("volumeMounts", []):
        if mount["name"] in volumes:
            secret = volumes[mount["name"]]
            every = list(SECRETS[secret["secretName"]]["stringData"])
            keys = [i["key"] for i in secret.get("items", [])] or every
            for key in keys:
                files[f"{mount['mountPath']}/{key}"] = (secret["secretName"], key)
    return files
