"""services.agent.ssh against real OpenSSH hosts."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import threading
import time

import pytest

from ferry.domain.errors import AuthenticationFailed, HostKeyMismatch, HostKeyUnknown, HostUnreachable
from services.agent.ssh import OUTPUT_LIMIT, HostSession, SSHTarget
from tests.harness.sshd import SshdHost

pytestmark = pytest.mark.sshd


def target_for(host: SshdHost, **overrides) -> SSHTarget:
    fields = dict(
        name="web-1",
        address=host.address,
        port=host.port,
        private_key=host.client_key_pem,
        host_key=host.host_key_line,
    )
    fields.update(overrides)
    return SSHTarget(**fields)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def host(sshd_hosts) -> SshdHost:
    return sshd_hosts(1)[0]


@pytest.fixture
def session(host):
    with HostSession.connect(target_for(host)) as s:
        yield s


def test_secrets_stay_out_of_repr(host):
    text = repr(target_for(host, password="hunter2"))
    assert "PRIVATE KEY" not in text and "hunter2" not in text


def test_run_merges_output_passes_env_and_cwd(session):
    result = session.run(
        "echo out; echo err >&2; pwd; printf '%s\\n' \"$GREETING\"; exit 3",
        env={"GREETING": "it's a $HOME `x` test"},
        cwd="/srv",
        timeout=10,
    )
    assert result.exit_code == 3
    assert result.output == "out\nerr\n/srv\nit's a $HOME `x` test\n"
    assert result.duration > 0


def test_one_connection_is_reused_with_a_fast_cipher(session):
    assert session.cipher == "aes128-gcm@openssh.com"
    first = session.run("echo $PPID", timeout=10).output
    again = session.run("cat /proc/$PPID/status | grep PPid", timeout=10).output
    assert first and again  # several commands over one transport
    assert session.run("true", timeout=10).ok


def test_timeout_returns_124_and_kills_the_command(host, session):
    started = time.monotonic()
    result = session.run("echo $$ > /srv/pid; echo started; exec sleep 30", timeout=0.5)
    assert result.exit_code == 124
    assert "started" in result.output and "timed out" in result.output
    assert time.monotonic() - started < 5
    pid = int((host.srv_path / "pid").read_text())
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}/ns/mnt"))


def test_output_keeps_the_last_64_kib(session):
    result = session.run("seq 1 100000", timeout=20)
    assert result.ok
    assert result.output.endswith("99999\n100000\n")
    assert len(result.output.encode()) <= OUTPUT_LIMIT + 200
    assert "truncated" in result.output.splitlines()[0]


def test_undecodable_output_is_replaced(session):
    result = session.run("printf 'ok \\377\\376\\n'", timeout=10)
    assert result.output.startswith("ok ") and "\ufffd" in result.output


def test_pinned_key_mismatch_is_refused_before_anything_runs(host):
    target = target_for(host)
    host.rotate_host_key()
    log_before = len(host.log_text)
    srv_before = sorted(p.name for p in host.srv_path.iterdir())

    with pytest.raises(HostKeyMismatch) as caught:
        HostSession.connect(target)

    assert caught.value.host == "web-1"
    assert "SHA256:" in str(caught.value)
    assert sorted(p.name for p in host.srv_path.iterdir()) == srv_before
    log_after = host.log_text[log_before:]
    assert "Accepted" not in log_after and "Starting session" not in log_after
    # With the new key pinned it connects again.
    with HostSession.connect(target_for(host)) as ok:
        assert ok.run("true", timeout=10).ok


def test_trust_on_first_use_records_the_key(host):
    tofu = target_for(host, host_key=None, trust_on_first_use=True)
    with HostSession.connect(tofu) as session:
        assert session.trusted_on_first_use
        recorded = session.observed_host_key
    assert recorded == host.host_key_line
    with HostSession.connect(target_for(host, host_key=recorded)) as session:
        assert not session.trusted_on_first_use
    host.rotate_host_key()
    with pytest.raises(HostKeyMismatch):
        HostSession.connect(target_for(host, host_key=recorded, trust_on_first_use=True))


def test_unknown_key_without_tofu_is_refused(host):
    with pytest.raises(HostKeyUnknown):
        HostSession.connect(target_for(host, host_key=None, trust_on_first_use=False))
    assert "Accepted" not in host.log_text


def test_unreachable_port_fails_fast(host):
    with socket.socket() as s:
        s.bind((host.address, 0))
        closed_port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(HostUnreachable):
        HostSession.connect(target_for(host, port=closed_port), timeout=3)
    assert time.monotonic() - started < 2


def test_wrong_client_key_fails_authentication(host, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(AuthenticationFailed):
        HostSession.connect(target_for(host, private_key=other.read_text()))


def test_upload_is_byte_identical(host, session):
    data = os.urandom(3 * 1024 * 1024 + 17)
    written = session.upload(io.BytesIO(data), "/srv/blob.bin", size=len(data))
    assert written == len(data)
    assert (host.srv_path / "blob.bin").read_bytes() == data


def test_stream_a_tar_into_tar_x(host, session):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(200):
            body = f"file {i}\n".encode() * 50
            info = tarfile.TarInfo(f"many/f{i:03}.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    size = buf.tell()
    buf.seek(0)
    result, sent = session.stream_to_command(buf, "mkdir -p /srv/x && tar -x -f - -C /srv/x", timeout=30)
    assert result.ok, result.output
    assert sent == size
    assert len(list((host.srv_path / "x/many").iterdir())) == 200
    assert (host.srv_path / "x/many/f199.txt").read_text() == "file 199\n" * 50


def test_stream_into_a_failing_command_reports_it(session):
    result, _ = session.stream_to_command(
        io.BytesIO(b"not a tar" * 1000), "tar -x -f - -C /nonexistent", timeout=30
    )
    assert result.exit_code != 0
    assert "tar:" in result.output


def test_session_reports_a_dead_host(host, session):
    host.stop()
    with pytest.raises(HostUnreachable):
        session.run("true", timeout=5)


def test_host_dying_during_a_command_is_unreachable_not_a_failed_command(host, session):
    killer = threading.Timer(0.3, host.stop)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(HostUnreachable):
            session.run("sleep 30", timeout=20)
    finally:
        killer.join()
    assert time.monotonic() - started < 5
