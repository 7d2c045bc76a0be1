"""bench_upload.py's methods: one payload to every host in parallel by ferry's agent, scp, rsync, Ansible.

Every run is checked on every host (files and bytes) and cleared after; that housekeeping is never timed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import SshClientFiles, run_parallel, settle, tree_stats
from ferry.local.localsshd import SshdHost
from services.agent import remote
from services.agent.ssh import HostSession, SSHTarget
from services.builder.package import Archive

DEPLOY_PATH = "/srv/ferry-bench"
BENCH_DIR = "/srv/bench"  # where the baselines extract, on every host
GCM = "aes128-gcm@openssh.com"
SCP = "scp + extract"
SCP_GCM = "scp -c aes128-gcm + extract"
_TRANSFERRED = re.compile(r"transferred (\d+) bytes in ([0-9.]+)s")


@dataclass
class Payload:
    name: str
    tree: Path
    files: int
    size: int  # bytes of the tree
    archive: Archive
    pack_seconds: float


@dataclass
class FerryRun:
    """What one ferry run saw on its slowest host."""

    cipher: str | None = None
    transferred: list[int] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # slowest host's connect/prepare/transfer/extract


class Bench:
    def __init__(self, hosts: list[SshdHost], client: SshClientFiles, work: Path, timeout: float) -> None:
        self.hosts = hosts
        self.client = client
        self.work = work
        self.timeout = timeout
        self.targets = [
            SSHTarget(
                name=f"host{i}",
                address=h.address,
                port=h.port,
                private_key=h.client_key_pem,
                host_key=h.host_key_line,
            )
            for i, h in enumerate(hosts)
        ]
        self.pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="agent")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- host-side housekeeping (never timed) ------------------------------
    def local(self, i: int, remote_path: str) -> Path:
        """The real path of a path under /srv on host i."""
        return self.hosts[i].srv_path / Path(remote_path).relative_to("/srv")

    def clear(self, remote_path: str) -> None:
        for i in range(len(self.hosts)):
            shutil.rmtree(self.local(i, remote_path), ignore_errors=True)
        settle()

    def verify(self, remote_dir: str, payload: Payload) -> None:
        for i in range(len(self.hosts)):
            got = tree_stats(self.local(i, remote_dir), ignore=(remote.MARKER,))
            if got != (payload.files, payload.size):
                raise RuntimeError(
                    f"host{i}:{remote_dir} holds {got[0]} files / {got[1]} bytes, "
                    f"expected {payload.files} / {payload.size}"
                )

    # --- ferry ---------------------------------------------------------------
    def ferry(self, payload: Payload) -> tuple[float, FerryRun]:
        """One release to every host in parallel; the caller clears or keeps the host cache."""
        release_id = f"bench-{uuid.uuid4().hex[:12]}"
        archive = payload.archive

        def one(target: SSHTarget) -> tuple[str | None, int, dict[str, float]]:
            t0 = time.perf_counter()
            with HostSession.connect(target, timeout=10.0) as session:
                t1 = time.perf_counter()
                prepared = remote.prepare(session, DEPLOY_PATH)
                if not prepared.ok:
                    raise RuntimeError(f"{target.name}: prepare failed: {prepared.output}")
                t2 = time.perf_counter()
                step = remote.upload_artifact(
                    session,
                    DEPLOY_PATH,
                    release_id,
                    archive.digest,
                    archive.fmt,
                    lambda: open(archive.path, "rb"),  # noqa: SIM115 -- upload_artifact closes it
                    timeout=self.timeout,
                )
                t3 = time.perf_counter()
                if not step.ok:
                    raise RuntimeError(f"{target.name}: upload failed: {step.output}")
                match = _TRANSFERRED.search(step.output)
                transfer = float(match.group(2)) if match else 0.0  # probe + transfer, as the step reports
                phases = {
                    "connect": t1 - t0,
                    "prepare": t2 - t1,
                    "probe+transfer": transfer,
                    "extract": (t3 - t2) - transfer,
                }
                return session.cipher, int(step.detail.get("transferred", 0)), phases

        started = time.perf_counter()
        futures = [self.pool.submit(one, t) for t in self.targets]
        results = [f.result(timeout=self.timeout + 60) for f in futures]
        seconds = time.perf_counter() - started
        run = FerryRun(cipher=results[0][0], transferred=[r[1] for r in results])
        slowest = max(results, key=lambda r: sum(r[2].values()))
        run.phases = slowest[2]
        self.verify(f"{DEPLOY_PATH}/releases/{release_id}", payload)
        return seconds, run

    # --- scp + ssh tar -x ------------------------------------------------------
    def scp(self, payload: Payload, cipher: str | None) -> tuple[float, float]:
        """(scp seconds, extract seconds), each phase over all hosts in parallel."""
        tag = uuid.uuid4().hex[:8]
        remote_archive = f"/srv/bench-{tag}{Path(payload.archive.path).name[64:]}"
        dest = f"{BENCH_DIR}/scp-{tag}"
        flags = " ".join(remote.FORMATS[payload.archive.fmt][1])
        copies = [
            [
                "scp", "-q", *self.client.options(i, cipher=cipher), "-P", str(h.port),
                str(payload.archive.path), f"root@{h.address}:{remote_archive}",
            ]
            for i, h in enumerate(self.hosts)
        ]  # fmt: skip
        extract = f"mkdir -p {dest} && tar -x --no-same-owner {flags} -f {remote_archive} -C {dest}"
        extracts = [[*self.client.ssh(i, cipher=cipher), extract] for i in range(len(self.hosts))]
        t0 = time.perf_counter()
        run_parallel(copies, timeout=self.timeout)
        t1 = time.perf_counter()
        run_parallel(extracts, timeout=self.timeout)
        t2 = time.perf_counter()
        self.verify(dest, payload)
        for i in range(len(self.hosts)):
            self.local(i, remote_archive).unlink()
        self.clear(dest)
        return t1 - t0, t2 - t1

    # --- rsync -------------------------------------------------------------------
    def rsync(self, payload: Payload) -> float:
        dest = f"{BENCH_DIR}/rsync-{uuid.uuid4().hex[:8]}/"
        commands = []
        for i, h in enumerate(self.hosts):
            shell = shlex.join(self.client.ssh(i)[:-1])  # ssh <options> -p <port>, without the destination
            commands.append(["rsync", "-a", "-e", shell, f"{payload.tree}/", f"root@{h.address}:{dest}"])
        t0 = time.perf_counter()
        run_parallel(commands, timeout=self.timeout)
        seconds = time.perf_counter() - t0
        self.verify(dest, payload)
        self.clear(dest)
        return seconds

    # --- ansible -----------------------------------------------------------------
    def ansible(self, payload: Payload, playbook_bin: str) -> float:
        home = self.work / "ansible"
        if not home.exists():
            self._write_ansible_files(home)
        dest = f"{BENCH_DIR}/ansible-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, ANSIBLE_CONFIG=str(home / "ansible.cfg"))
        command = [
            playbook_bin, "-i", str(home / "inventory.ini"), str(home / "unarchive.yml"),
            "-e", f"dest={dest}", "-e", f"archive={payload.archive.path}",
        ]  # fmt: skip
        t0 = time.perf_counter()
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=self.timeout)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"ansible-playbook failed:\n{exc.stdout.decode()[-3000:]}") from exc
        seconds = time.perf_counter() - t0
        self.verify(dest, payload)
        self.clear(dest)
        return seconds

    def _write_ansible_files(self, home: Path) -> None:
        home.mkdir(parents=True)
        (home / "cp").mkdir()
        rows = ["[bench]"]
        for i, h in enumerate(self.hosts):
            common = (
                f"-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={self.client.known_hosts} -o GlobalKnownHostsFile=/dev/null"
            )
            rows.append(
                f"host{i} ansible_host={h.address} ansible_port={h.port} ansible_user=root "
                f"ansible_ssh_private_key_file={self.client.keys[i]} "
                f"ansible_ssh_common_args='{common}' ansible_python_interpreter=/usr/bin/python3"
            )
        (home / "inventory.ini").write_text("\n".join(rows) + "\n")
        (home / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {len(self.hosts)}\n"
            "host_key_checking = True\n"
            f"local_tmp = {home / 'tmp'}\n"
            "retry_files_enabled = False\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {home / 'cp'}\n"
        )
        (home / "unarchive.yml").write_text(
            "- hosts: bench\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - ansible.builtin.file: {path: '{{ dest }}', state: directory}\n"
            "    - ansible.builtin.unarchive: {src: '{{ archive }}', dest: '{{ dest }}'}\n"
        )
