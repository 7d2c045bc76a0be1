"""services.agent.remote against real OpenSSH hosts with private /srv: upload, shared files, hooks,
activate, rollback, prune.
"""

# ruff: noqa: F401, F811  (the `big_files`, `host`, `session` fixtures are imported by name)

from __future__ import annotations

import os
import shlex

import pytest

from ferry.domain.errors import InvalidInput, InvalidPath
from services.agent import remote
from tests.integration.remote_harness import (
    DP,
    Artifact,
    assert_tree,
    big_files,
    host,
    release,
    session,
    small,
    srv,
    wait_until,
)

pytestmark = pytest.mark.sshd


# --- upload --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zst", "gz", "none"])
def test_upload_extracts_identical_files_and_reuses_the_hosts_copy(host, session, big_files, fmt):
    artifact = Artifact(big_files, fmt)

    first = release(session, "r1", artifact)
    assert first.detail["transferred"] == len(artifact.data)
    assert first.detail["reused"] is False
    assert_tree(srv(host) / "releases/r1", big_files)
    assert not list((srv(host) / "releases").glob(".tmp-*"))
    # The artifact's manifest, read on the agent while the bytes travelled, is kept for deltas.
    assert (srv(host) / ".ferry/manifests/r1.gz").is_file()
    opened = artifact.opened  # once for the transfer, once for the manifest

    second = release(session, "r2", artifact)
    assert second.detail == {**second.detail, "transferred": 0, "reused": True, "delta": False}
    assert artifact.opened == opened  # nothing fetched for a host that already holds the digest
    assert_tree(srv(host) / "releases/r2", big_files)

    again = release(session, "r1", artifact)  # re-running a finished step is a no-op
    assert again.detail["already_extracted"] is True and again.detail["transferred"] == 0
    assert artifact.opened == opened
    assert remote.host_has_artifact(session, DP, artifact.digest)
    assert not remote.host_has_artifact(session, DP, "0" * 64)


def test_zst_to_a_host_without_zstd_is_decompressed_on_the_agent(host, session, big_files):
    # Hide zstd inside this host's own mount namespace only.
    assert session.run("mount --bind /dev/null /usr/bin/zstd && ! command -v zstd", timeout=10).ok
    artifact = Artifact(big_files, "zst")
    result = release(session, "r1", artifact)
    assert result.detail["decompressed_on_agent"] is True
    assert result.detail["stored_as"] == f"{artifact.digest}.tar"
    assert_tree(srv(host) / "releases/r1", big_files)
    assert release(session, "r2", artifact).detail["transferred"] == 0


def test_upload_recovers_from_a_crashed_attempt(host, session):
    artifact = small("1")
    releases = srv(host) / "releases"
    (releases / ".tmp-r1/half").mkdir(parents=True)
    (srv(host) / f".ferry/artifacts/.partial-{artifact.digest}-dead").write_bytes(b"trunc")
    (releases / "r1").mkdir()  # a dir with no marker: never completed
    release(session, "r1", artifact)
    assert (releases / "r1/VERSION").read_text() == "1\n"
    assert not (releases / ".tmp-r1").exists()
    assert not list((srv(host) / ".ferry/artifacts").glob(".partial-*"))


def test_upload_with_a_wrong_digest_keeps_nothing(host, session):
    artifact = small("1")
    wrong = "f" * 64
    result = remote.upload_artifact(session, DP, "r1", wrong, "none", artifact.open_stream)
    assert result.exit_code != 0
    assert "digest mismatch" in result.output
    assert not (srv(host) / "releases/r1").exists()
    assert os.listdir(srv(host) / ".ferry/artifacts") == []


def test_upload_refuses_to_replace_a_release_holding_another_artifact(session):
    release(session, "r1", small("1"))
    other = small("2")
    result = remote.upload_artifact(session, DP, "r1", other.digest, "none", other.open_stream)
    assert result.exit_code != 0 and "another artifact" in result.output
    assert other.opened == 0


def test_paths_and_ids_are_validated(session):
    art = small("1")
    for bad in ["relative/path", "/srv/../etc", "/srv/a\nb", "/"]:
        with pytest.raises(InvalidPath):
            remote.prepare(session, bad)
    for bad_id in ["../x", "a b", "", "a;rm", "x/y"]:
        with pytest.raises(InvalidPath):
            remote.upload_artifact(session, DP, bad_id, art.digest, "none", art.open_stream)
        with pytest.raises(InvalidPath):
            remote.activate(session, DP, bad_id)
    with pytest.raises(InvalidInput):
        remote.upload_artifact(session, DP, "r1", "nothex", "none", art.open_stream)
    with pytest.raises(InvalidInput):
        remote.upload_artifact(session, DP, "r1", art.digest, "rar", art.open_stream)
    for bad_shared in ["../etc/passwd", "/etc/passwd", "a/../../b", "a/./b", ""]:
        with pytest.raises(InvalidPath):
            remote.link_shared(session, DP, "r1", [bad_shared], [])
    assert art.opened == 0


# --- shared, hooks ---------------------------------------------------------------
def test_link_shared_files_and_dirs(host, session):
    artifact = Artifact(
        {"VERSION": b"1\n", "config/app.env": b"FROM_ARTIFACT=1\n", "log/old.log": b"x"}, "none"
    )
    release(session, "r1", artifact)
    (srv(host) / "shared/config").mkdir(parents=True)
    (srv(host) / "shared/config/app.env").write_text("SECRET=kept\n")

    result = remote.link_shared(
        session, DP, "r1", ["config/app.env", "data/state.json"], ["log", "tmp/cache"]
    )
    assert result.ok, result.output
    rel = srv(host) / "releases/r1"
    for p in ["config/app.env", "data/state.json", "log", "tmp/cache"]:
        assert os.readlink(rel / p) == f"{DP}/shared/{p}"
    assert (srv(host) / "shared/config/app.env").read_text() == "SECRET=kept\n"
    assert (srv(host) / "shared/data/state.json").is_file()
    assert (srv(host) / "shared/tmp/cache").is_dir()
    assert (srv(host) / "shared/log").is_dir()
    # Seen from inside the host, through the links.
    assert session.run(f"cat {DP}/releases/r1/config/app.env", timeout=10).output == "SECRET=kept\n"
    assert remote.link_shared(session, DP, "r1", ["config/app.env"], ["log"]).ok  # idempotent


def test_run_hook_gets_the_ferry_environment(host, session):
    release(session, "r1", small("1"))
    result = remote.run_hook(
        session,
        DP,
        "r1",
        'echo "$FERRY_RELEASE_ID $FERRY_DEPLOY_PATH $FERRY_RELEASE_PATH $FERRY_HOST_ADDRESS '
        '$FERRY_HOST_NAME $EXTRA" > hook.out; pwd',
        env={"EXTRA": "extra value", "FERRY_RELEASE_ID": "spoofed"},
        timeout=10,
    )
    assert result.ok, result.output
    assert result.output.strip() == f"{DP}/releases/r1"
    assert (srv(host) / "releases/r1/hook.out").read_text().split() == [
        "r1",
        DP,
        f"{DP}/releases/r1",
        host.address,
        "web-1",
        "extra",
        "value",
    ]
    assert remote.run_hook(session, DP, "r1", None).detail == {"skipped": True}
    assert remote.run_hook(session, DP, "r1", "  ").detail == {"skipped": True}
    failing = remote.run_hook(session, DP, "r1", "echo bad; exit 9", timeout=10)
    assert failing.exit_code == 9 and "bad" in failing.output


# --- activate, rollback, prune -------------------------------------------------------
def test_activate_reports_previous_and_is_idempotent(host, session):
    release(session, "r1", small("1"))
    release(session, "r2", small("2"))
    assert remote.current_release(session, DP) is None

    first = remote.activate(session, DP, "r1")
    assert first.ok and first.detail["previous"] is None
    second = remote.activate(session, DP, "r2")
    assert second.detail == {"release": "r2", "previous": "r1", "already_current": False}
    assert os.readlink(srv(host) / "current") == "releases/r2"
    assert remote.current_release(session, DP) == "r2"

    repeat = remote.activate(session, DP, "r2")  # a redelivered activation changes nothing
    assert repeat.ok and repeat.detail == {"release": "r2", "previous": "r1", "already_current": True}
    assert not list(srv(host).glob("current.tmp-*"))

    missing = remote.activate(session, DP, "r9")
    assert missing.exit_code != 0 and "no such release" in missing.output
    assert remote.current_release(session, DP) == "r2"


def test_switching_is_atomic_for_readers_on_the_host(host, session):
    release(session, "r1", small("1"))
    release(session, "r2", small("2"))
    remote.activate(session, DP, "r1")
    reader = (
        "n=0; fail=0; while [ ! -e /srv/stop ] && [ $n -lt 2000000 ]; do "
        f"if ! read v < {DP}/current/VERSION 2>/dev/null; then fail=$((fail+1)); fi; n=$((n+1)); done; "
        "echo $n $fail > /srv/reader.out"
    )
    started = session.run(
        f"setsid nohup sh -c {shlex.quote(reader)} >/dev/null 2>&1 </dev/null &", timeout=10
    )
    assert started.ok
    for i in range(10):
        assert remote.activate(session, DP, "r2" if i % 2 == 0 else "r1").ok
    (host.srv_path / "stop").touch()
    out = host.srv_path / "reader.out"
    assert wait_until(lambda: out.exists() and out.read_text().endswith("\n"))
    reads, failures = map(int, out.read_text().split())
    assert reads > 100 and failures == 0


def test_rollback_switches_back(host, session):
    for n in ("1", "2"):
        release(session, f"r{n}", small(n))
        remote.activate(session, DP, f"r{n}")
    result = remote.rollback(session, DP, "r1")
    assert result.ok and result.detail["previous"] == "r2"
    assert (srv(host) / "current/VERSION").read_text() == "1\n"
    assert remote.rollback(session, DP, "r1").detail["already_current"] is True


def test_prune_keeps_the_newest_the_live_and_the_protected(host, session):
    ids = [f"r{i}" for i in range(1, 7)]
    for rid in ids:
        release(session, rid, small(rid), use_delta=False)  # every release with its archive
        (srv(host) / f".ferry/manifests/{rid}.gz").write_bytes(b"")  # and a manifest (deltas)
    remote.activate(session, DP, "r2")  # live, but old

    result = remote.prune(session, DP, keep=2, protect={"r1"})
    assert result.ok, result.output
    assert sorted(result.detail["removed"]) == ["r3", "r4"]
    assert sorted(os.listdir(srv(host) / "releases")) == ["r1", "r2", "r5", "r6"]
    # Cached archives of removed releases go too; those still extracted stay.
    cached = {name.split(".")[0] for name in os.listdir(srv(host) / ".ferry/artifacts")}
    assert cached == {small(r).digest for r in ["r1", "r2", "r5", "r6"]}
    assert sorted(os.listdir(srv(host) / ".ferry/manifests")) == ["r1.gz", "r2.gz", "r5.gz", "r6.gz"]

    again = remote.prune(session, DP, keep=1, protect=set())
    assert sorted(os.listdir(srv(host) / "releases")) == ["r2", "r6"]
    assert again.detail["live"] == "r2"
    with pytest.raises(InvalidInput):
        remote.prune(session, DP, keep=0, protect=set())
