"""The baselines bench_release.py runs beside ferry, on the same hosts and the same archive.

scp      per host `scp -c aes128-gcm@openssh.com` of the archive, then one `ssh` that extracts
         it into releases/<tag>/ and switches `current` with a rename; 10 hosts at once
ansible  ansible-playbook: directory, unarchive (copy from the controller, extract), symlink;
         forks=10, pipelining on
rsync    `rsync -a` of the application tree (without .git), 10 hosts at once; bytes sent from --stats
script   for one host: scp + extract + switch + restart (the sample app's restart command) and
         a wait for its health URL, in one shell script
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import SshClientFiles, run_per_host, settle
from ferry.local.localsshd import SshdHost

GCM = "aes128-gcm@openssh.com"
ROOT = "/srv/bench"  # every baseline writes below this on every host
_SENT = re.compile(r"Total bytes sent: ([\d,]+)")


def tar_flags(archive: Path) -> str:
    name = archive.name
    return "--zstd" if name.endswith(".zst") else "-z" if name.endswith(".gz") else ""


def extract_and_switch(archive: str, deploy: str, tag: str, flags: str) -> str:
    """Shell: extract into releases/<tag>/, then point `current` at it with an atomic rename."""
    d, rel = shlex.quote(deploy), f"releases/{tag}"
    return (
        f"set -e; mkdir -p {d}/{rel}; tar -x --no-same-owner {flags} -f {shlex.quote(archive)} -C {d}/{rel}; "
        f"ln -sfn {rel} {d}/.current-{tag}; mv -T {d}/.current-{tag} {d}/current; "
        f"rm -f {shlex.quote(archive)}"
    )


def find_ansible(install: bool) -> str | None:
    """ansible-playbook from this venv; pip-installed (ansible-core) only when asked to."""
    found = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    if found or not install:
        return found
    print("installing ansible-core into this venv (--with-ansible) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "ansible-core"], check=True, timeout=600
    )
    return shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))


class Baselines:
    def __init__(self, hosts: list[SshdHost], client: SshClientFiles, work: Path, timeout: float) -> None:
        self.hosts = hosts
        self.client = client
        self.work = work
        self.timeout = timeout

    def local(self, i: int, remote_path: str) -> Path:
        """The real path on this machine of a path under /srv on host i."""
        return self.hosts[i].srv_path / Path(remote_path).relative_to("/srv")

    def clear(self, count: int, remote_path: str = ROOT) -> None:
        for i in range(count):
            shutil.rmtree(self.local(i, remote_path), ignore_errors=True)
        settle()

    def check_current(self, count: int, deploy: str, version: str) -> None:
        for i in range(count):
            got = self.local(i, f"{deploy}/current/VERSION").read_text().strip()
            if got != version:
                raise RuntimeError(f"host{i}:{deploy}/current/VERSION is {got!r}, expected {version!r}")

    # --- scp ----------------------------------------------------------------------
    def scp(self, archive: Path, count: int, version: str, parallel: int) -> float:
        tag = uuid.uuid4().hex[:10]
        deploy = f"{ROOT}/scp"
        remote_archive = f"/srv/scp-{tag}{''.join(archive.suffixes[-2:])}"
        script = extract_and_switch(remote_archive, deploy, tag, tar_flags(archive))
        per_host = []
        for i, h in enumerate(self.hosts[:count]):
            copy = ["scp", "-q", *self.client.options(i, cipher=GCM), "-P", str(h.port), str(archive),
                    f"root@{h.address}:{remote_archive}"]  # fmt: skip
            per_host.append([copy, [*self.client.ssh(i, cipher=GCM), script]])
        started = time.perf_counter()
        run_per_host(per_host, parallel=parallel, timeout=self.timeout)
        seconds = time.perf_counter() - started
        self.check_current(count, deploy, version)
        return seconds

    # --- one host: scp + extract + switch + restart -----------------------------------
    def script(self, archive: Path, version: str, restart: str, health_url: str) -> float:
        """A shell script a team might write for one host; the clock includes the health wait."""
        h, tag = self.hosts[0], uuid.uuid4().hex[:10]
        deploy = f"{ROOT}/script"
        remote_archive = f"/srv/script-{tag}{''.join(archive.suffixes[-2:])}"
        scp = shlex.join(["scp", "-q", *self.client.options(0, cipher=GCM), "-P", str(h.port)])
        ssh = shlex.join(self.client.ssh(0, cipher=GCM))
        on_host = (
            extract_and_switch(remote_archive, deploy, tag, tar_flags(archive))
            + f"; mkdir -p {deploy}/shared; cd {deploy}/current; "
            + f"FERRY_DEPLOY_PATH={deploy} FERRY_HOST_ADDRESS={h.address} sh -c {shlex.quote(restart)}"
        )
        text = (
            "#!/bin/sh\nset -e\n"
            f"{scp} {shlex.quote(str(archive))} root@{h.address}:{remote_archive}\n"
            f"{ssh} {shlex.quote(on_host)} >/dev/null\n"
            "i=0\n"
            f"until curl -fsS -o /dev/null --max-time 2 {shlex.quote(health_url)}; do\n"
            '  i=$((i + 1)); [ "$i" -lt 300 ] || { echo "not healthy" >&2; exit 1; }; sleep 0.1\n'
            "done\n"
        )
        path = self.work / "deploy.sh"
        path.write_text(text)
        started = time.perf_counter()
        done = subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=self.timeout)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"deploy.sh failed ({done.returncode}): {done.stderr[-2000:]}")
        self.check_current(1, deploy, version)
        return seconds

    # --- rsync --------------------------------------------------------------------------
    def rsync(self, tree: Path, count: int, parallel: int) -> tuple[float, int]:
        """(seconds, bytes sent to the busiest host) of `rsync -a` of the tree into /srv/bench/rsync/."""
        per_host = []
        for i, h in enumerate(self.hosts[:count]):
            shell = shlex.join(self.client.ssh(i)[:-1])  # ssh <options> -p <port>, without the destination
            per_host.append(
                [["rsync", "-a", "--mkpath", "--stats", "--exclude=.git", "-e", shell, f"{tree}/",
                  f"root@{h.address}:{ROOT}/rsync/"]]
            )  # fmt: skip
        started = time.perf_counter()
        outputs = run_per_host(per_host, parallel=parallel, timeout=self.timeout)
        seconds = time.perf_counter() - started
        sent = [int(m.group(1).replace(",", "")) for out in outputs if (m := _SENT.search(out[0]))]
        return seconds, max(sent, default=0)

    # --- ansible -------------------------------------------------------------------------
    def ansible(self, playbook_bin: str, archive: Path, count: int, version: str, forks: int) -> float:
        home = self.work / "ansible"
        self._write_ansible_files(home, count, forks)
        tag = uuid.uuid4().hex[:10]
        deploy = f"{ROOT}/ansible"
        env = dict(os.environ, ANSIBLE_CONFIG=str(home / "ansible.cfg"))
        command = [
            playbook_bin, "-i", str(home / f"inventory-{count}.ini"), str(home / "release.yml"),
            "-e", f"deploy={deploy}", "-e", f"tag={tag}", "-e", f"archive={archive}",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=self.timeout)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"ansible-playbook failed:\n{done.stdout[-3000:]}{done.stderr[-1000:]}")
        self.check_current(count, deploy, version)
        return seconds

    def _write_ansible_files(self, home: Path, count: int, forks: int) -> None:
        (home / "cp").mkdir(parents=True, exist_ok=True)
        rows = ["[bench]"]
        common = (
            f"-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={self.client.known_hosts} -o GlobalKnownHostsFile=/dev/null"
        )
        for i, h in enumerate(self.hosts[:count]):
            rows.append(
                f"host{i} ansible_host={h.address} ansible_port={h.port} ansible_user=root "
                f"ansible_ssh_private_key_file={self.client.keys[i]} "
                f"ansible_ssh_common_args='{common}' ansible_python_interpreter=/usr/bin/python3"
            )
        (home / f"inventory-{count}.ini").write_text("\n".join(rows) + "\n")
        (home / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {forks}\n"
            "host_key_checking = True\n"
            f"local_tmp = {home / 'tmp'}\n"
            "retry_files_enabled = False\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {home / 'cp'}\n"
        )
        (home / "release.yml").write_text(
            "- hosts: bench\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - ansible.builtin.file: {path: '{{ deploy }}/releases/{{ tag }}', state: directory}\n"
            "    - ansible.builtin.unarchive:\n"
            "        {src: '{{ archive }}', dest: '{{ deploy }}/releases/{{ tag }}'}\n"
            "    - ansible.builtin.file:\n"
            "        {src: 'releases/{{ tag }}', dest: '{{ deploy }}/current', state: link, force: true}\n"
        )
