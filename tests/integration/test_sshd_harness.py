"""The sshd host harness itself: private /srv per host, key rotation, and a clean teardown."""

from __future__ import annotations

import os
import time

import pytest

from services.agent.ssh import HostSession, SSHTarget
from tests.harness.sshd import SshdHost

pytestmark = pytest.mark.sshd


def target_for(host: SshdHost, name: str = "host") -> SSHTarget:
    return SSHTarget(
        name=name,
        address=host.address,
        port=host.port,
        private_key=host.client_key_pem,
        host_key=host.host_key_line,
    )


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_two_hosts_have_their_own_address_key_and_srv(sshd_hosts):
    a, b = sshd_hosts(2)
    assert a.address != b.address
    assert a.address.startswith("127.0.0.") and int(a.address.rsplit(".", 1)[1]) >= 10
    assert a.host_key_line != b.host_key_line
    assert a.host_key_line.startswith("ssh-ed25519 AAAA")
    assert a.namespace != b.namespace

    with HostSession.connect(target_for(a, "a")) as sa, HostSession.connect(target_for(b, "b")) as sb:
        assert sa.run("echo from-a > /srv/only-on-a", timeout=10).ok
        assert (a.srv_path / "only-on-a").read_text() == "from-a\n"
        assert not (b.srv_path / "only-on-a").exists()
        seen = sb.run("test -e /srv/only-on-a && echo present || echo absent", timeout=10)
        assert seen.output.strip() == "absent"
        # The real filesystem's /srv is untouched by either host.
        assert not os.path.exists("/srv/only-on-a")


def test_restart_keeps_the_namespace_and_files(sshd_hosts):
    (host,) = sshd_hosts(1)
    (host.srv_path / "kept").write_text("yes")
    ns = host.namespace
    host.restart()
    assert host.namespace == ns
    with HostSession.connect(target_for(host)) as session:
        assert session.run("cat /srv/kept", timeout=10).output == "yes"


def test_rotate_host_key_changes_the_key_on_the_same_port(sshd_hosts):
    (host,) = sshd_hosts(1)
    old_key, port, address = host.host_key_line, host.port, host.address
    new_key = host.rotate_host_key()
    assert new_key != old_key
    assert (host.port, host.address) == (port, address)
    with HostSession.connect(target_for(host)) as session:
        assert session.observed_host_key == new_key


def test_teardown_ends_every_process_in_the_namespace(sshd_hosts):
    (host,) = sshd_hosts(1)
    with HostSession.connect(target_for(host)) as session:
        started = session.run(
            "setsid nohup sleep 600 >/dev/null 2>&1 </dev/null & echo $!; "
            "nohup sh -c 'sleep 600' >/dev/null 2>&1 </dev/null & echo $!",
            timeout=10,
        )
        daemons = [int(p) for p in started.output.split()]
        assert len(daemons) == 2
        assert set(daemons) <= set(host.leftover_pids())
        sshd_pid = host.sshd_pid
        assert sshd_pid is not None

    host.stop()

    assert host.leftover_pids() == []
    for pid in [*daemons, sshd_pid]:
        assert wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}/ns/mnt")), pid


def test_password_login_mode(sshd_hosts):
    (host,) = sshd_hosts(1, password="s3cret-for-tests")
    target = SSHTarget(
        name="pw",
        address=host.address,
        port=host.port,
        password="s3cret-for-tests",
        host_key=host.host_key_line,
    )
    with HostSession.connect(target) as session:
        assert session.run("id -u", timeout=10).output.strip() == "0"
