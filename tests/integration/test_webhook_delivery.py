"""Webhook delivery with real parts: nats-server, the database, and a real HTTP receiver in a thread
(webhook_receiver).
"""

# ruff: noqa: F401, F811  (the `receiver`, `world` fixtures are imported by name)

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.fernet import Fernet
from nats.js import api as js_api

from ferry.db import repo
from ferry.domain import webhooks
from ferry.infra.eventstore import EVENTS_STREAM
from ferry.infra.secrets import SecretBox
from ferry.infra.settings import Settings
from ferry.local.natsserver import free_port
from services.notifier import bootstrap as notifier
from services.notifier.webhooks import ROUTER, WEBHOOK_WORK
from tests.integration.webhook_receiver import (
    World,
    append,
    consumers_exist,
    history,
    receiver,
    settled,
    until,
    world,
)


async def test_events_go_to_matching_webhooks_only_and_generic_posts_are_signed(world: World) -> None:
    everything = world.add("all", "/all", kind="generic", secret="s3cret")
    world.add("shop-chat", "/shop", kind="slack", project="shop", events=["release."])
    world.add("host-alarm", "/hosts", kind="generic", events=["host.failed"])
    world.add("off", "/off", kind="generic", enabled=False)
    world.add("other-project", "/other", kind="mattermost", project="nope")

    async with world.running():
        shop = await append(world.bus, history("r-shop", "shop"))
        blog = await append(world.bus, history("r-blog", "blog", fail=True))
        rec = world.receiver
        await until(lambda: len(rec.to("/all")) >= 5 and len(rec.to("/shop")) >= 2, "deliveries")
        await until(lambda: len(rec.to("/hosts")) >= 1, "host alarm")
        await settled(world.bus)

    posted = [(r.json()["release"]["id"], r.json()["event"]["type"]) for r in rec.to("/all")]
    assert sorted(posted) == sorted(
        [
            ("r-shop", "release.requested"),
            ("r-shop", "release.succeeded"),
            ("r-blog", "release.requested"),
            ("r-blog", "host.failed"),
            ("r-blog", "release.failed"),
        ]
    )
    for r in rec.to("/all"):
        body = r.json()
        assert r.status == 200
        assert webhooks.verify_signature("s3cret", r.body, r.headers["X-Ferry-Signature"])
        assert r.headers["X-Ferry-Event"] == body["event"]["type"]
        assert r.headers["X-Ferry-Delivery"] == f"{everything.id}-{body['seq']}"
        expected_seq = (shop if body["release"]["id"] == "r-shop" else blog)[body["event"]["type"]]
        assert body["seq"] == expected_seq
    failed = next(r.json() for r in rec.to("/all") if r.json()["event"]["type"] == "release.failed")
    assert failed["release"] == {
        "id": "r-blog",
        "project": "blog",
        "environment": "prod",
        "ref": "main",
        "status": "failed",
    }

    texts = sorted(r.json()["text"] for r in rec.to("/shop"))
    assert len(texts) == 2 and all("r-shop" in t and "shop → prod" in t for t in texts)
    assert all(t.endswith("<https://ferry.example/releases/r-shop|open in ferry>") for t in texts)
    assert all("X-Ferry-Signature" not in r.headers for r in rec.to("/shop"))

    (alarm,) = rec.to("/hosts")
    assert alarm.json()["event"]["type"] == "host.failed" and alarm.json()["event"]["host"] == "web1"
    assert rec.to("/off") == [] and rec.to("/other") == []
    assert {d.status for d in world.deliveries("all")} == {"delivered"}
    assert len(world.deliveries("all")) == 5


async def test_retries_until_success_gives_up_on_404_and_one_failing_webhook_blocks_none(
    world: World,
) -> None:
    rec = world.receiver
    rec.plans["/flaky"] = [500, 500]  # then 200
    rec.always["/gone"] = 404
    rec.always["/down"] = 503
    for name in ("flaky", "gone", "down", "ok"):
        world.add(name, f"/{name}", events=["release.requested"])
    dead = free_port()  # nothing listens here: connection refused
    with world.sessions() as s, s.begin():  # type: ignore[operator]
        repo.create_webhook(
            s, world.box, "dead", f"http://127.0.0.1:{dead}/x", "generic", events=["release.requested"]
        )

    async with world.running():
        seqs = await append(world.bus, history("r1", "shop")[:1])
        await until(lambda: any(r.status == 200 for r in rec.to("/flaky")), "flaky success")
        await until(lambda: len(rec.to("/down")) >= 6, "down exhausted")
        await settled(world.bus)

    seq = seqs["release.requested"]
    flaky = rec.to("/flaky")
    assert [r.status for r in flaky] == [500, 500, 200]
    assert len({r.headers["X-Ferry-Delivery"] for r in flaky}) == 1  # the same delivery, retried
    (d,) = world.deliveries("flaky")
    assert (d.status, d.attempts, d.seq, d.last_status_code) == ("delivered", 3, seq, 200)

    assert [r.status for r in rec.to("/gone")] == [404]  # given up at once
    (gone,) = world.deliveries("gone")
    assert (gone.status, gone.attempts, gone.last_status_code) == ("failed", 1, 404)
    assert gone.last_error == "HTTP 404"

    assert [r.status for r in rec.to("/down")] == [503] * 6  # bounded attempts
    (down,) = world.deliveries("down")
    assert (down.status, down.attempts) == ("failed", 6) and "after 6 attempts" in (down.last_error or "")

    (dead_row,) = world.deliveries("dead")
    assert dead_row.status == "failed" and dead_row.attempts == 6 and dead_row.last_status_code is None
    assert "ConnectError" in (dead_row.last_error or "") and str(dead) not in (dead_row.last_error or "")

    assert [r.status for r in rec.to("/ok")] == [200]


async def test_restart_after_success_posts_nothing_again(world: World) -> None:
    world.add("all", "/all", secret="k", events=["release."])
    rec = world.receiver
    async with world.running():
        await append(world.bus, history("r1", "shop"))
        await until(lambda: len(rec.to("/all")) >= 2, "first deliveries")
        await settled(world.bus)
    assert len(rec.to("/all")) == 2

    # A plain restart resumes the durable consumers where they were.
    async with world.running():
        await settled(world.bus)
    assert len(rec.to("/all")) == 2

    # Replaying the whole stream (the router's consumer lost) queues nothing new ...
    await world.bus.js.delete_consumer(EVENTS_STREAM, ROUTER)
    await world.bus.js.add_consumer(
        EVENTS_STREAM,
        js_api.ConsumerConfig(
            durable_name=ROUTER,
            filter_subject="ferry.release.>",
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
        ),
    )
    # ... and a work item repeated after the duplicate window is acked without posting.
    (first, *_) = world.deliveries("all")
    event = next(e for e in history("r1", "shop") if e.type == first.event_type)
    release = webhooks.ReleaseInfo("r1", "shop", "prod", "main", "queued")
    await world.bus.publish_work(
        WEBHOOK_WORK,
        "a-different-msg-id",
        {
            "webhook": first.webhook_id,
            "seq": first.seq,
            "event": event.model_dump(mode="json"),
            "release": release.as_json(),
        },
    )
    async with world.running():
        await settled(world.bus)
    assert len(rec.to("/all")) == 2
    assert all(d.attempts == 1 and d.status == "delivered" for d in world.deliveries("all"))


async def test_the_notifier_entry_point_wires_its_own_connections(
    world: World, nats_server, migrated_db: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=migrated_db,
        secret_key=key,
        public_url="https://ferry.example/",
        ws_port=free_port(),
    )
    box = SecretBox(key)
    with world.sessions() as s, s.begin():  # type: ignore[operator]
        repo.create_webhook(s, box, "feishu", world.receiver.url("/feishu"), "feishu", secret="fs")
        repo.create_webhook(
            s, box, "ding", world.receiver.url("/ding?access_token=t"), "dingtalk", secret="ds"
        )
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.main(settings, stop))  # the WebSocket app and the deliverer
    try:
        await consumers_exist(world.bus)
        await append(world.bus, history("r9", "shop")[:1])
        await until(lambda: world.receiver.to("/feishu") and world.receiver.to("/ding"), "chat posts")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    (feishu,) = world.receiver.to("/feishu")
    body = feishu.json()
    assert body["msg_type"] == "text" and body["sign"] == webhooks.feishu_sign("fs", int(body["timestamp"]))
    assert body["content"]["text"].endswith("https://ferry.example/releases/r9")
    (ding,) = world.receiver.to("/ding")
    from urllib.parse import parse_qs

    query = parse_qs(ding.query)
    assert query["access_token"] == ["t"]
    assert query["sign"] == [webhooks.dingtalk_sign("ds", int(query["timestamp"][0]))]
    assert ding.json()["msgtype"] == "text"
