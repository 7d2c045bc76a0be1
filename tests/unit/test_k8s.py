"""deploy/k8s, validated offline: every object against the Kubernetes JSON schemas (kubernetes-validate,
pinned versions, strict: unknown fields fail), then what a schema cannot see — probes on real ports,
Secrets and keys that exist, each service's own NATS identity, NetworkPolicies that select real pods
and allow what each service needs, the HPAs' targets, pinned images, non-root read-only containers.

The overlays are plain kustomizations (``resources`` only), so following their ``resources`` lists
renders exactly what ``kubectl apply -k`` applies. The commands the containers run are checked
(and run) by tests/unit/test_deploy_files.py together with docker-compose.yml.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

from ferry.domain.agentgroups import validate_group
from ferry.infra.natsauth import SERVICE_IDENTITY
from ferry.infra.signing import public_path
from services.builder.sandbox import ALWAYS_HIDDEN
from tests.harness.k8s import (
    COMPONENTS,
    K8S,
    KUSTOMIZATIONS,
    NATS_VALUES,
    ROOT,
    SECRETS,
    VERSION,
    Obj,
    all_pod_labels,
    component,
    env_of,
    ferry_pods,
    kustomize,
    nats_pod_labels,
    of_kind,
    pods,
    secret_files,
    selects,
)

KUBERNETES_VERSIONS = ("1.33.0", "1.35.0")
"""The oldest supported (the builder's pod user namespace is on by default from 1.33) and a newer one."""
NOT_RESOURCES = {"kustomization.yaml", "nats-values.yaml"}


# --- the files and the schemas -------------------------------------------------------------
def test_every_manifest_is_rendered_by_a_kustomization_or_is_the_secret_template():
    rendered = {
        (directory / entry).resolve()
        for directory in KUSTOMIZATIONS
        for entry in yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    }
    for path in K8S.rglob("*.yaml"):
        if path.name not in NOT_RESOURCES and path.name != "secrets.example.yaml":
            assert path.resolve() in rendered, f"{path} is applied by no kustomization"
    assert {d.name for d in KUSTOMIZATIONS} == {"base", "agent-group-example", "postgres"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_each_kustomization_renders_unique_namespaced_objects(directory):
    objects = kustomize(directory)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), keys
    for o in objects:
        assert o["kind"] == "Namespace" or o["metadata"]["namespace"] == "ferry", o["metadata"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_passes_the_kubernetes_schema(version):
    objects = [*kustomize(K8S / "agent-group-example"), *kustomize(K8S / "postgres"), *SECRETS.values()]
    assert len(objects) > 25
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{obj['kind']}/{obj['metadata']['name']} on {version}"
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_the_schema_check_fails_on_a_wrong_field():
    deployment = yaml.safe_load(yaml.safe_dump(of_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["tcpSocket"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# --- images and security contexts ------------------------------------------------------------
def dockerfile_uid() -> int:
    text = (ROOT / "deploy/Dockerfile").read_text()
    match = re.search(r"useradd --system --uid (\d+) --gid ferry", text)
    assert match and f"USER {match[1]}:" in text
    return int(match[1])


def test_images_are_pinned_and_ferry_runs_its_own_version():
    for workload, pod in pods():
        for c in pod["spec"]["containers"]:
            name, _, tag = c["image"].rpartition(":")
            assert name and tag and tag != "latest", c["image"]
    for workload, pod in ferry_pods():
        assert [c["image"] for c in pod["spec"]["containers"]] == [f"ferry:{VERSION}"], workload["metadata"]


def test_containers_run_non_root_read_only_without_capabilities():
    uid = dockerfile_uid()
    for workload, pod in pods():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec.get("automountServiceAccountToken") is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
        if component(pod) in (*COMPONENTS, "migrate"):
            assert spec["securityContext"]["runAsUser"] == uid == spec["securityContext"]["fsGroup"]
            # a read-only root: FERRY_HOME and /tmp are volumes
            mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
            assert {env_of(pod)["FERRY_HOME"], "/tmp"} <= mounts
        kinds = {k for v in spec.get("volumes", []) for k in v if k != "name"}
        assert kinds <= {"emptyDir", "secret", "configMap", "persistentVolumeClaim"}, kinds  # no hostPath
        relaxed = spec["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault"
        assert relaxed == (component(pod) == "builder"), "only the builder's sandbox needs more"


def test_the_builder_gets_user_namespaces_for_its_sandbox_and_secrets_it_hides_from_hooks():
    [(_, pod)] = ferry_pods("builder")
    spec = pod["spec"]
    assert spec["hostUsers"] is False  # the pod's own user namespace: what makes the rest safe
    assert spec["containers"][0]["securityContext"]["procMount"] == "Unmasked"
    assert spec["securityContext"]["appArmorProfile"]["type"] == "Unconfined"
    assert env_of(pod).get("FERRY_HOOK_SANDBOX", "bwrap") == "bwrap"  # hooks never run unsandboxed
    secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
    for mount in spec["containers"][0]["volumeMounts"]:
        if mount["name"] in secret_volumes:
            path = PurePosixPath(mount["mountPath"])
            assert any(path.is_relative_to(h) for h in ALWAYS_HIDDEN), f"hooks could see {path}"
    assert "ferry-hook" in (ROOT / "deploy/Dockerfile").read_text()
    assert "bubblewrap" in (ROOT / "deploy/Dockerfile").read_text()


# --- probes, services, autoscalers -------------------------------------------------------------
def test_gateway_and_notifier_probe_their_own_ports_with_an_allowed_host():
    for name in ("gateway", "notifier"):
        [(_, pod)] = ferry_pods(name)
        c = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        setting = "FERRY_HTTP_PORT" if name == "gateway" else "FERRY_WS_PORT"
        assert set(ports.values()) == {int(env_of(pod)[setting])}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c[kind]
            action = probe.get("httpGet") or probe["tcpSocket"]
            assert action["port"] in ports, (name, kind)
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] == "/healthz"
                # the guard answers only allowed Host names; the kubelet would send the pod's IP
                assert {"name": "Host", "value": "localhost"} in probe["httpGet"]["httpHeaders"]


def test_services_select_pods_and_name_their_ports():
    for service in of_kind("Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        matched = [p for _, p in pods() if selects(selector, p["metadata"]["labels"])]
        assert matched, service["metadata"]["name"]
        for pod in matched:
            names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_gateway_and_notifier_scale_with_an_hpa_on_cpu_requests():
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    targets = set()
    for hpa in of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments
        assert "replicas" not in deployments[ref["name"]]["spec"], "kubectl apply would reset the HPA's count"
        pod = deployments[ref["name"]]["spec"]["template"]
        assert all(c["resources"]["requests"]["cpu"] for c in pod["spec"]["containers"])
        assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        targets.add(component(pod))
    assert targets == {"gateway", "notifier"}


def test_deployment_selectors_match_only_their_own_pods():
    deployments = of_kind("Deployment")
    for d in deployments:
        for other in deployments:
            mine = selects(d["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"])
            assert mine == (d is other), (d["metadata"]["name"], other["metadata"]["name"])


# --- secrets and identities ---------------------------------------------------------------------
def test_every_secret_a_pod_reads_is_in_the_template_with_that_key():
    for workload, pod in pods():
        for c in pod["spec"]["containers"]:
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in SECRETS[ref["name"]]["stringData"], ref
        for v in pod["spec"].get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] in SECRETS
    for secret in SECRETS.values():
        assert all(value == "" for value in secret["stringData"].values()), "the template holds no values"


def test_every_file_a_setting_names_is_mounted():
    for workload, pod in ferry_pods():
        files = secret_files(pod)
        for name, value in env_of(pod).items():
            if isinstance(value, str) and value.startswith("/etc/ferry/"):
                assert value in files, (workload["metadata"]["name"], name, value)


def test_each_service_connects_as_its_own_nats_identity_and_only_the_gateway_signs():
    for name in COMPONENTS:
        for workload, pod in ferry_pods(name):
            env, files = env_of(pod), secret_files(pod)
            assert PurePosixPath(env["FERRY_NATS_CREDS"]).name == f"{SERVICE_IDENTITY[name]}.json"
            signing = {f for f, (secret, _) in files.items() if secret == "ferry-work-signing-key"}
            if name == "gateway":
                key = env["FERRY_WORK_SIGNING_KEY"]
                assert signing == {key, str(public_path(Path(key)))}  # the .pub beside it: nothing to write
            else:
                assert not signing and "FERRY_WORK_SIGNING_KEY" not in env
            if name in ("builder", "agent"):
                assert env["FERRY_WORK_PUBLIC_KEY"] in files
    [(_, job)] = ferry_pods("migrate")
    assert not secret_files(job) and "FERRY_DATABASE_URL" in env_of(job)


def test_settings_named_in_the_manifests_exist_in_the_code():
    source = "\n".join(p.read_text() for d in ("ferry", "services") for p in (ROOT / d).rglob("*.py"))
    for _, pod in ferry_pods():
        for name in env_of(pod):
            assert f'"{name}"' in source, f"{name} is read by no code"


def test_the_services_find_the_nats_cluster_the_chart_makes():
    name = NATS_VALUES["fullnameOverride"]
    replicas = NATS_VALUES["config"]["cluster"]["replicas"]
    [config] = of_kind("ConfigMap")
    scheme = "tls" if NATS_VALUES["config"]["nats"]["tls"]["enabled"] else "nats"
    port = NATS_VALUES["config"]["nats"]["port"]
    expected = [f"{scheme}://{name}-{i}.{name}-headless:{port}" for i in range(replicas)]
    assert config["data"]["FERRY_NATS_URL"].split(",") == expected
    assert int(config["data"]["FERRY_STREAM_REPLICAS"]) == replicas == 3


def test_nats_values_run_jetstream_on_files_with_ferrys_generated_users():
    cfg = NATS_VALUES["config"]
    assert cfg["cluster"]["enabled"] and cfg["jetstream"]["enabled"]
    assert cfg["jetstream"]["fileStore"]["enabled"] and cfg["jetstream"]["fileStore"]["pvc"]["enabled"]
    assert cfg["cluster"]["tls"]["merge"]["verify"] is True
    for tls in (cfg["nats"]["tls"], cfg["cluster"]["tls"]):
        assert tls["enabled"] and tls["secretName"] in SECRETS
    assert {"tls.crt", "tls.key", NATS_VALUES["tlsCA"]["key"]} <= set(SECRETS["ferry-nats-tls"]["stringData"])
    [include] = [v for k, v in cfg["merge"].items() if k.endswith("$include")]
    [mount] = [p["value"] for p in NATS_VALUES["container"]["patch"] if p["path"] == "/volumeMounts/-"]
    [volume] = [p["value"] for p in NATS_VALUES["podTemplate"]["patch"] if p["path"] == "/spec/volumes/-"]
    assert mount["name"] == volume["name"]
    # includes are relative to the chart's /etc/nats-config/nats.conf
    resolved = PurePosixPath(re.sub(r"[^/]+/\.\./", "", f"/etc/nats-config/{include}"))
    assert resolved.parent == PurePosixPath(mount["mountPath"])
    assert resolved.name in SECRETS[volume["secret"]["secretName"]]["stringData"]
    assert resolved.name == "auth.conf"  # what `python -m ferry.infra.natsauth DIR` writes


# --- network policies ---------------------------------------------------------------------------
POLICIES = of_kind("NetworkPolicy")


def allowed(labels: dict[str, str], direction: str) -> list[tuple[Obj, set[int]]]:
    """(peer, ports) that the policies selecting a pod with ``labels`` allow in ``direction``."""
    rules = []
    for policy in POLICIES:
        spec = policy["spec"]
        if selects(spec["podSelector"], labels) and direction.capitalize() in spec["policyTypes"]:
            for rule in spec.get(direction, []):
                ports = {p["port"] for p in rule.get("ports", [])}
                for peer in rule.get("to" if direction == "egress" else "from", [{}]):
                    rules.append((peer, ports))
    return rules


def reaches(labels: dict[str, str], target: dict[str, str], port: int) -> bool:
    return any(
        "podSelector" in peer
        and "namespaceSelector" not in peer
        and selects(peer["podSelector"], target)
        and port in ports
        for peer, ports in allowed(labels, "egress")
    )


def reaches_internet(labels: dict[str, str], port: int) -> bool:
    return any(
        peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" and port in ports
        for peer, ports in allowed(labels, "egress")
    )


def test_everything_is_denied_unless_a_policy_allows_it():
    [deny] = [p for p in POLICIES if p["metadata"]["name"] == "default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy in POLICIES:
        selector = policy["spec"]["podSelector"]
        name = policy["metadata"]["name"]
        assert not selector or any(selects(selector, lab) for lab in all_pod_labels()), name
        for direction in ("ingress", "egress"):
            for rule in policy["spec"].get(direction, []):
                for peer in rule.get("to", rule.get("from", [])):
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        assert any(selects(peer["podSelector"], lab) for lab in all_pod_labels()), peer


def test_each_service_reaches_nats_postgres_and_dns_and_only_what_it_needs_beyond():
    [postgres] = [p for _, p in pods() if p["metadata"]["labels"]["app.kubernetes.io/name"] == "postgresql"]
    pg = postgres["metadata"]["labels"]
    for _, pod in ferry_pods():
        labels, name = pod["metadata"]["labels"], component(pod)
        assert reaches(labels, pg, 5432), name
        assert reaches(labels, nats_pod_labels(), 4222) == (name != "migrate"), name
        assert any("namespaceSelector" in peer and 53 in ports for peer, ports in allowed(labels, "egress"))
        internet = {port for port in (22, 80, 443, 9418) if reaches_internet(labels, port)}
        assert (
            internet
            == {
                "gateway": set(),
                "migrate": set(),
                "notifier": {80, 443},
                "builder": {22, 80, 443, 9418},
                "agent": {22, 80, 443},
            }[name]
        ), name
    # and the other side lets them in
    for _, pod in ferry_pods():
        if component(pod) != "migrate":
            assert any(
                "podSelector" in peer
                and selects(peer["podSelector"], pod["metadata"]["labels"])
                and 4222 in ports
                for peer, ports in allowed(nats_pod_labels(), "ingress")
            )
    assert any(6222 in ports for _, ports in allowed(nats_pod_labels(), "ingress"))


def test_gateway_and_notifier_accept_connections_on_their_ports_only():
    for _, pod in ferry_pods():
        ports = {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        opened = {port for _, ps in allowed(pod["metadata"]["labels"], "ingress") for port in ps}
        assert opened == ports, component(pod)


# --- agent groups -------------------------------------------------------------------------------
def test_agent_groups_are_separate_deployments_with_their_own_group():
    groups = {}
    for workload, pod in ferry_pods("agent"):
        env = env_of(pod)
        group = validate_group(env["FERRY_AGENT_GROUP"], "FERRY_AGENT_GROUP")
        assert pod["metadata"]["labels"]["ferry.dev/agent-group"] == group
        assert env["FERRY_AGENT_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        groups[group] = workload["metadata"]["name"]
    assert groups == {"default": "ferry-agent", "eu": "ferry-agent-eu"}
    base = [o["metadata"]["name"] for o in kustomize(K8S / "base") if o["kind"] == "Deployment"]
    assert "ferry-agent-eu" not in base
