"""``ferry release watch``: the real gateway and the real notifier on real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import typer
import uvicorn
from rich.console import Console
from typer.testing import CliRunner

from ferry.cli.watch import ReleaseView, watch_release
from ferry.cli.watch_cmd import register
from ferry.domain.events import HOST_STEPS, Event, Plan, Recipe, utcnow
from ferry.domain.release import (
    Fail,
    FailHost,
    FinishHostStep,
    RecordArtifact,
    RecordHook,
    RecordSource,
    ReleaseState,
    RequestRelease,
    RollBackHost,
    StartBuild,
    StartHostStep,
    Succeed,
    decide,
    evolve,
)
from ferry.infra.settings import Settings
from ferry.local.natsserver import free_port
from services.gateway.app import create_app as create_gateway
from services.notifier.app import NotifierConfig
from services.notifier.app import create_app as create_notifier
from services.notifier.bootstrap import server_config
from tests.harness.history import append_next

PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("web1", "web2"))


def decided(rid: str, commands: list) -> list[Event]:
    state = ReleaseState(rid)
    events: list[Event] = []
    for command in commands:
        for e in decide(state, command, utcnow()):
            state = evolve(state, e)
            events.append(e)
    return events


def build() -> list:
    return [
        RequestRelease("shop", "prod", "main", "alice", PLAN),
        StartBuild("b1"),
        RecordSource("c" * 40),
        RecordHook(0, "make", 0, 1.0, "ok"),
        RecordArtifact("sha256:" + "d" * 64, 1234, "zst"),
    ]


def host_steps(host: str, steps=HOST_STEPS) -> list:
    out: list = []
    for step in steps:
        out += [StartHostStep(host, step, "agent-1"), FinishHostStep(host, step, 0, 0.1, f"{step} ok")]
    return out


def succeeding(rid: str) -> list[Event]:
    return decided(rid, build() + host_steps("web1") + host_steps("web2") + [Succeed()])


def failing(rid: str) -> list[Event]:
    before_health = HOST_STEPS[: HOST_STEPS.index("health")]
    return decided(
        rid,
        build()
        + host_steps("web1", before_health)
        + [
            StartHostStep("web1", "health", "agent-1"),
            FinishHostStep("web1", "health", 1, 5.0, "HTTP 503"),
            FailHost("web1", "health", "health check failed"),
            RollBackHost("web1", None),
            Fail("health check failed on web1"),
        ],
    )


async def append(bus, events: list[Event]) -> int:
    seq = 0
    for e in events:
        seq = await append_next(bus.events, [e])
    return seq


@contextlib.asynccontextmanager
async def serving(app, port: int) -> AsyncIterator[None]:
    settings = replace(Settings(), ws_port=port)
    server = uvicorn.Server(server_config(settings, app))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done(), "server exited during start-up"
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def platform(nats_url: str, home: Path) -> AsyncIterator[tuple[str, str, int]]:
    """The real gateway (no background workers) and notifier; yields (api url, ws url, ws port)."""
    settings = replace(Settings(), home=home, nats_url=nats_url, secret_key=None)
    api_port, ws_port = free_port(), free_port()
    async with (
        serving(create_gateway(settings, background=False), api_port),
        serving(create_notifier(settings, NotifierConfig(heartbeat=0.3)), ws_port),
    ):
        yield f"http://127.0.0.1:{api_port}", f"ws://127.0.0.1:{ws_port}", ws_port


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200, color_system=None), out


def event_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


async def test_watch_follows_a_release_to_success_exit_0(bus, nats_server, tmp_path):
    events = succeeding("w1")
    await append(bus, events[:6])
    async with platform(nats_server.url, tmp_path) as (api, ws, _):
        console, out = plain_console()
        watching = asyncio.create_task(watch_release("w1", api_url=api, ws_url=ws, console=console))
        for e in events[6:]:
            await append(bus, [e])
        code = await asyncio.wait_for(watching, 20)
    lines = event_lines(out.getvalue())
    assert code == 0, out.getvalue()
    # The watch starts from whatever the gateway had (the test keeps appending meanwhile) and
    # prints every later event once: one release on the stream, so seq == version.
    seeded = int(out.getvalue().split("(from #", 1)[1].split(")", 1)[0])
    assert seeded >= 6
    assert [line.split()[1] for line in lines] == [e.type for e in events[seeded:]]
    assert [int(line.split()[0][1:]) for line in lines] == list(range(seeded + 1, len(events) + 1))
    assert "host=web2 step=post_release exit_code=0" in lines[-2]
    assert out.getvalue().rstrip().endswith("release w1 succeeded")


async def test_watch_exits_1_when_the_release_fails(bus, nats_server, tmp_path):
    events = failing("w2")
    await append(bus, events[:3])
    async with platform(nats_server.url, tmp_path) as (api, ws, _):
        console, out = plain_console()
        watching = asyncio.create_task(watch_release("w2", api_url=api, ws_url=ws, console=console))
        await append(bus, events[3:])
        assert await asyncio.wait_for(watching, 20) == 1
    text = out.getvalue()
    assert "host.failed host=web1 step=health reason=health check failed" in text
    assert text.rstrip().endswith("release w2 failed: health check failed on web1")


async def test_watch_of_a_finished_release_returns_at_once(bus, nats_server, tmp_path):
    await append(bus, succeeding("w3"))
    async with platform(nats_server.url, tmp_path) as (api, _ws, _):
        console, out = plain_console()
        nowhere = f"ws://127.0.0.1:{free_port()}"  # the notifier is not needed
        assert await watch_release("w3", api_url=api, ws_url=nowhere, console=console) == 0


async def test_unknown_release_and_unreachable_services_exit_2(bus, nats_server, tmp_path):
    await append(bus, succeeding("w4")[:3])
    async with platform(nats_server.url, tmp_path) as (api, _ws, _):
        console, out = plain_console()
        assert await watch_release("nope", api_url=api, ws_url="ws://x", console=console) == 2
        assert "404" in out.getvalue()
        console, out = plain_console()
        nowhere = f"ws://127.0.0.1:{free_port()}"
        code = await watch_release("w4", api_url=api, ws_url=nowhere, console=console, backoff=0.05)
        assert code == 2 and "cannot reach the notifier" in out.getvalue()
    console, out = plain_console()
    gone = f"http://127.0.0.1:{free_port()}"
    assert await watch_release("w4", api_url=gone, ws_url="ws://x", console=console) == 2
    assert "cannot reach the gateway" in out.getvalue()


async def test_watch_reconnects_with_since_when_the_notifier_restarts(bus, nats_server, tmp_path):
    events = succeeding("w5")
    await append(bus, events[:4])
    settings = replace(Settings(), home=tmp_path, nats_url=nats_server.url)
    api_port, ws_port = free_port(), free_port()
    api, ws = f"http://127.0.0.1:{api_port}", f"ws://127.0.0.1:{ws_port}"
    console, out = plain_console()
    async with serving(create_gateway(settings, background=False), api_port):
        async with serving(create_notifier(settings, NotifierConfig(heartbeat=0.3)), ws_port):
            watching = asyncio.create_task(
                watch_release("w5", api_url=api, ws_url=ws, console=console, attempts=20, backoff=0.1)
            )
            await append(bus, events[4:12])
            deadline = time.monotonic() + 10
            while "#12 " not in out.getvalue():  # it has seen everything appended so far
                assert time.monotonic() < deadline and not watching.done(), out.getvalue()
                await asyncio.sleep(0.02)
        await append(bus, events[12:20])  # while the notifier is down
        async with serving(create_notifier(settings, NotifierConfig(heartbeat=0.3)), ws_port):
            await append(bus, events[20:])
            assert await asyncio.wait_for(watching, 20) == 0
    seqs = [int(line.split()[0][1:]) for line in event_lines(out.getvalue())]
    seeded = int(out.getvalue().split("(from #", 1)[1].split(")", 1)[0])
    assert seqs == list(range(seeded + 1, len(events) + 1))


async def test_live_display_and_the_api_view_agree_with_the_events(bus, nats_server, tmp_path):
    events = failing("w6")
    await append(bus, events)
    async with platform(nats_server.url, tmp_path) as (api, ws, _):
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=120)
        assert await watch_release("w6", api_url=api, ws_url=ws, console=console, live=True) == 1
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"{api}/api/releases/w6")).json()
    from_events = ReleaseView("w6")
    for seq, e in enumerate(events, start=1):
        from_events.apply(seq, e)
    assert body["status"] == from_events.status == "failed"
    from_api = {
        h["name"]: (h["status"], sum(s["status"] == "succeeded" for s in h["steps"])) for h in body["hosts"]
    }
    assert from_api == {h.name: (h.status, h.done) for h in from_events.view.hosts}
    rendered = io.StringIO()
    Console(file=rendered, width=120, color_system=None).print(from_events.render())
    text = rendered.getvalue()
    assert "web1" in text and "rolled_back" in text and "web2" in text and "waiting" in text
    assert "5/7" in text  # upload, link, pre_release, activate, restart done on web1


def test_cli_command_usage_errors_exit_2():
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps "watch" a subcommand, as under `ferry release`
        pass

    runner = CliRunner()
    bad = runner.invoke(app, ["watch", "../etc"])
    assert bad.exit_code == 2 and "release id" in bad.output
    gone = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["watch", "r1", "--plain"], env={"FERRY_URL": gone})
    assert result.exit_code == 2 and "cannot reach the gateway" in result.output
