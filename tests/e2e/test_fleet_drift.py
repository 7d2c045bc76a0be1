"""Issue 8: the fleet as the history records it, and ``ferry doctor`` finding a host switched by hand."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.local.natsserver import free_port
from tests.e2e.test_pipeline import current_of, register
from tests.harness.sampleapp import make_sample_repo
from tests.harness.system import System

pytestmark = [pytest.mark.sshd]


def test_doctor_reports_the_host_switched_by_hand_and_nothing_else(
    system: System, sshd_hosts, tmp_path: Path
):
    hosts = sshd_hosts(3)
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=free_port(), concurrency=3)
    sample.commit("A")
    first = system.release("web", "prod", "main")
    assert system.wait(first)["status"] == "succeeded"
    sample.commit("B")
    second = system.release("web", "prod", "main")
    assert system.wait(second)["status"] == "succeeded"

    fleet = system.api.get("/api/projects/web/environments/prod/hosts").json()["hosts"]
    assert [(h["name"], h["release"]) for h in fleet] == [(f"web{i}", second) for i in (1, 2, 3)]

    # someone switches web2 back by hand, behind ferry's back
    link = hosts[1].srv_path / "app" / "current"
    os.unlink(link)
    os.symlink(f"releases/{first}", link)
    assert current_of(hosts[1]) == f"releases/{first}"

    report = system.api.get("/api/projects/web/environments/prod/doctor", timeout=120).json()
    assert report["drift"] == ["web2"]
    by_name = {h["name"]: h for h in report["hosts"]}
    assert by_name["web2"]["live"] == first and by_name["web2"]["release"] == second
    assert all(by_name[n]["live"] == second and not by_name[n]["drift"] for n in ("web1", "web3"))
    assert current_of(hosts[1]) == f"releases/{first}", "doctor changes nothing"

    cli = subprocess.run(
        [str(Path(sys.executable).parent / "ferry"), "doctor", "web", "prod"],
        env={**os.environ, "FERRY_URL": system.url, "FERRY_TOKEN": system.token},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stderr
    assert "web2: DRIFT" in cli.stdout and "web1: ok" in cli.stdout and "web3: ok" in cli.stdout


async def test_the_project_page_shows_the_running_release_its_queue_and_drift(
    system: System, sshd_hosts, tmp_path: Path, page
):
    hosts = sshd_hosts(2)
    sample = make_sample_repo(tmp_path / "sample")
    register(system, hosts, sample.url, app_port=free_port(), concurrency=2)
    assert system.api.patch("/api/projects/web", json={"pre_release": "sleep 3"}).status_code == 200
    sample.commit("A")
    running = system.release("web", "prod", "main")
    waiting = system.release("web", "prod", "main")
    await page.goto(f"{system.url.rstrip('/')}/projects/web")
    assert await page.text_content("#environments .env-running") == running
    assert waiting in (await page.text_content("#environments .env-queue") or "")
    for rid in (running, waiting):
        assert (await asyncio.to_thread(system.wait, rid))["status"] == "succeeded"

    os.unlink(hosts[0].srv_path / "app" / "current")
    os.symlink(f"releases/{running}", hosts[0].srv_path / "app" / "current")  # by hand
    await page.reload()
    await page.click("button[data-doctor]")
    out = page.locator("#doctor-prod")
    await out.wait_for(state="visible")
    await page.wait_for_function(
        "document.querySelector('#doctor-prod').dataset.drift !== undefined", timeout=60_000
    )
    text = await out.text_content() or ""
    assert "1 host(s) drifted" in text and "web1: DRIFT" in text and "web2: ok" in text
