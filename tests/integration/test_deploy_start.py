"""The Kubernetes pods of deploy/k8s, started for real: each ferry container's own command, with the
environment and the mounted Secret files its manifest gives it, against a real nats-server — and
its probes must answer (HTTP probes with their headers, a NATS health request for the workers).

tests/unit/test_deploy_files.py proves every command docker-compose.yml and the manifests run is
one of these (the launcher's service table, and ``ferry db upgrade``), so this runs them all.
What a test machine cannot have like a cluster is replaced, and only that (``machine`` in
``pod_environment``): one nats-server without TLS instead of the chart's three, loopback instead
of 0.0.0.0, free ports, SQLite under a temporary directory for the database Secret, files under it
for the mounts. The NATS chart's side is checked the same way: its config's include of ferry's
generated users, laid out as the values mount it, read by a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import nats
import nats.errors
from cryptography.fernet import Fernet

from ferry.infra.natsauth import Credential, authorization_block, ensure_credentials
from ferry.infra.signing import ensure_signing_key, public_path
from ferry.local.natsserver import NatsServer, free_port, nats_server_binary
from tests.harness.k8s import NATS_VALUES, ROOT, Obj, component, ferry_pods, of_kind, secret_files

START_TIMEOUT = 45.0


def secret_values(tmp: Path, server: NatsServer) -> dict[tuple[str, str], str]:
    """Real values for the keys of deploy/k8s/secrets.example.yaml, made as the docs say."""
    key = tmp / "keys" / "work-signing.key"
    ensure_signing_key(key)  # `python -m ferry.infra.signing PATH`
    pub = public_path(key)
    values = {
        ("ferry-secret-key", "secret-key"): Fernet.generate_key().decode(),
        ("ferry-database", "url"): f"sqlite:///{tmp / 'ferry.db'}",
        ("ferry-bootstrap-token", "token"): "fry_" + secrets.token_urlsafe(32),
        ("ferry-work-signing-key", "work-signing.key"): key.read_text(),
        ("ferry-work-signing-key", "work-signing.pub"): pub.read_text(),
        ("ferry-work-public-key", "work-signing.pub"): pub.read_text(),
    }
    for identity_file in server.credentials_dir.glob("*.json"):  # `python -m ferry.infra.natsauth DIR`
        values[(f"ferry-nats-{identity_file.stem}", identity_file.name)] = identity_file.read_text()
    return values


def pod_environment(
    workload: Obj, pod: Obj, tmp: Path, server: NatsServer, values: dict[tuple[str, str], str]
) -> tuple[dict[str, str], dict[int, int]]:
    """The container's environment as the manifest makes it, and its container ports -> local ports."""
    name = workload["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
    mounts = tmp / "mounts" / name
    for path, ref in secret_files(pod).items():  # the Secret volumes, as files
        if ref[0] == "ferry-nats-ca":
            continue  # the test server speaks plain nats://
        target = mounts / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(values[ref])
    configmaps = {c["metadata"]["name"]: c["data"] for c in of_kind("ConfigMap")}
    raw: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        raw.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        raw[var["name"]] = var.get("value", var.get("valueFrom"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    for key, value in raw.items():
        if isinstance(value, dict) and "secretKeyRef" in value:
            value = values[(value["secretKeyRef"]["name"], value["secretKeyRef"]["key"])]
        elif isinstance(value, dict):
            assert value == {"fieldRef": {"fieldPath": "metadata.name"}}, value
            value = f"{name}-0"
        elif value.startswith("/etc/ferry/"):
            value = str(mounts / value.lstrip("/"))
        env[key] = value
    machine = {  # MACHINE: what differs from a cluster, nothing else
        "FERRY_NATS_URL": server.address,
        "FERRY_STREAM_REPLICAS": "1",
        "FERRY_HOME": str(tmp / "home" / name),
        "FERRY_HTTP_HOST": "127.0.0.1",
        "FERRY_METRICS_HOST": "127.0.0.1",
    }
    assert "FERRY_HOME" in env, name  # a read-only root: the manifest must point it at a volume
    env.update({k: v for k, v in machine.items() if k in env})
    env.pop("FERRY_NATS_CA", None)
    for setting in (
        "FERRY_HTTP_PORT",
        "FERRY_WS_PORT",
        "FERRY_BUILDER_METRICS_PORT",
        "FERRY_AGENT_METRICS_PORT",
    ):
        if setting in env and int(env[setting]) in ports:
            env[setting] = str(ports[int(env[setting])])
    return env, ports


def argv(container: Obj) -> list[str]:
    command = [*container["command"], *container.get("args", [])]
    bindir = Path(sys.executable).parent
    program = {"python": sys.executable, "ferry": str(bindir / "ferry")}[command[0]]
    return [program, *command[1:]]


def probe_ok(probe: Obj, ports: dict[int, int], container: Obj) -> bool:
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    action = probe.get("httpGet") or probe["tcpSocket"]
    port = ports[named.get(action["port"], action["port"])]
    if "tcpSocket" in probe:
        return port_open(port)
    headers = {h["name"]: h["value"] for h in action.get("httpHeaders", [])}
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}{action['path']}", headers=headers, timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


PORT_SETTINGS = ("FERRY_HTTP_PORT", "FERRY_WS_PORT", "FERRY_BUILDER_METRICS_PORT", "FERRY_AGENT_METRICS_PORT")


def serves_metrics(port: int) -> bool:
    """Whether ``port`` answers ``/metrics`` with ferry's Prometheus families."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and "ferry_" in answer.text


def health_replies(url: str, services: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every reply to ``ferry.health.<service>`` within half a second (each replica answers)."""

    async def ask() -> dict[str, list[dict[str, Any]]]:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        replies: dict[str, list[dict[str, Any]]] = {s: [] for s in services}
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            for service in services:
                await nc.publish(f"ferry.health.{service}", b"", reply=inbox)
            deadline = time.monotonic() + 0.5
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                if msg.data:  # an empty one is the server's "no responders"
                    reply = json.loads(msg.data)
                    replies[reply["service"]].append(reply)
        finally:
            await nc.close()
        return replies

    return asyncio.run(ask())


Running = tuple[Obj, Obj, dict[int, int], subprocess.Popen[bytes], Path]


def healthy(pod: Obj, ports: dict[int, int], workers: dict[str, list[dict[str, Any]]], name: str) -> bool:
    """The pod's probes pass; builder and agents answered over NATS and serve their metrics port."""
    container = pod["spec"]["containers"][0]
    metrics = {p["name"]: p["containerPort"] for p in container.get("ports", [])}.get("metrics")
    if metrics is not None and not serves_metrics(ports[metrics]):
        return False
    probes = [container[k] for k in ("readinessProbe", "livenessProbe") if k in container]
    if probes:
        return all(probe_ok(p, ports, container) for p in probes)
    replies = [r for r in workers.get(component(pod), []) if r.get("ok")]
    if component(pod) != "agent":
        return bool(replies)
    group = next(v["value"] for v in container["env"] if v["name"] == "FERRY_AGENT_GROUP")
    return any(r.get("name") == f"{name}-0" and r.get("agent_group") == group for r in replies)


def wait_healthy(running: list[Running], url: str) -> None:
    pending = {w["metadata"]["name"] for w, *_ in running}
    deadline = time.monotonic() + START_TIMEOUT
    while pending and time.monotonic() < deadline:
        workers = health_replies(url, {"builder", "agent"})
        for workload, pod, ports, proc, log in running:
            name = workload["metadata"]["name"]
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {log.read_text()[-2000:]}"
            if name in pending and healthy(pod, ports, workers, name):
                pending.discard(name)
        time.sleep(0.2)
    logs = {w["metadata"]["name"]: log.read_text()[-1500:] for w, *_, log in running}
    assert not pending, f"not healthy within {START_TIMEOUT}s: {pending}; {logs}"


def test_every_ferry_pod_starts_with_its_manifest_and_answers_its_probes(nats_server, tmp_path):
    values = secret_values(tmp_path, nats_server)
    workloads = ferry_pods()
    [(migrate_job, migrate_pod)] = [(w, p) for w, p in workloads if component(p) == "migrate"]
    env, _ = pod_environment(migrate_job, migrate_pod, tmp_path, nats_server, values)
    command = argv(migrate_pod["spec"]["containers"][0])
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "database at head" in done.stdout, done.stdout + done.stderr

    running: list[Running] = []
    try:
        for workload, pod in workloads:
            if pod is migrate_pod:
                continue
            env, ports = pod_environment(workload, pod, tmp_path, nats_server, values)
            log = tmp_path / f"{workload['metadata']['name']}.log"
            with log.open("wb") as out:
                command = argv(pod["spec"]["containers"][0])
                proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            running.append((workload, pod, ports, proc, log))
        assert {component(p) for _, p, *_ in running} == {"gateway", "notifier", "builder", "agent"}
        wait_healthy(running, nats_server.url)
    finally:
        for *_, proc, _ in running:
            proc.terminate()
        for *_, proc, _ in running:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def connects(port: int, credential: Credential) -> bool:
    """Whether the server at ``port`` takes ``credential`` (nats-py retries a refusal for ever)."""
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                f"nats://127.0.0.1:{port}",
                user=credential.user,
                password=credential.password,
                inbox_prefix=credential.inbox_prefix,
                connect_timeout=2,
                max_reconnect_attempts=0,
            ),
            timeout=3,
        )
    except (TimeoutError, nats.errors.Error, OSError):
        return False
    await nc.close()
    return True


def test_the_nats_charts_config_includes_ferrys_generated_users(tmp_path):
    """The include nats-values.yaml adds to the chart's nats.conf (in /etc/nats-config) reaches the
    mounted ferry-nats-auth Secret: a real nats-server reading a tree laid out the same way."""
    [include] = [v for k, v in NATS_VALUES["config"]["merge"].items() if k.endswith("$include")]
    [mount] = [p["value"] for p in NATS_VALUES["container"]["patch"] if p["path"] == "/volumeMounts/-"]
    etc = tmp_path / "etc"
    auth_dir = etc / PurePosixPath(mount["mountPath"]).relative_to("/etc")
    auth_dir.mkdir(parents=True)
    creds = ensure_credentials(tmp_path / "credentials")  # `python -m ferry.infra.natsauth DIR`
    (auth_dir / "auth.conf").write_text(authorization_block(creds))
    (etc / "nats-config").mkdir()
    port = free_port()
    conf = etc / "nats-config" / "nats.conf"  # as the chart writes its includes: `include <path>;`
    conf.write_text(f'port: {port}\ninclude {include};\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n')
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not port_open(port):
            assert server.poll() is None, server.communicate()[1].decode()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)
        assert asyncio.run(connects(port, creds["gateway"]))
        assert asyncio.run(connects(port, creds["agent"]))
        assert not asyncio.run(connects(port, Credential("agent", "not-the-password")))
    finally:
        server.terminate()
        server.communicate(timeout=10)
