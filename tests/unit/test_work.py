"""Work messages (ferry.domain.work): canonical bytes, tolerant of new fields, typed refusals."""

from __future__ import annotations

import pytest

from ferry.domain.work import BuildWork, DeployWork, MalformedWork, TimerWork, WebhookWork, canonical


def test_work_bodies_are_canonical_bytes() -> None:
    work = DeployWork(release_id="r1", host="web1.example.com", lock=3)
    assert work.canonical() == b'{"host":"web1.example.com","lock":3,"release_id":"r1"}'
    assert DeployWork.parse(work.canonical()) == work
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    # work queued before locks (no token) and by a newer gateway (an extra field) still reads
    assert BuildWork.parse(b'{"release_id": "r1", "added_later": 1}') == BuildWork(release_id="r1")
    assert TimerWork.parse(b'{"release_id": "r1", "at": "2026-01-01T00:00:00+00:00"}').msg_id == "timer:r1:0"


@pytest.mark.parametrize(
    "data, field",
    [
        (b"not json", "body"),
        (b"[1]", "body"),
        (b"{}", "release_id"),
        (b'{"release_id": "../x", "host": "h"}', "release_id"),
        (b'{"release_id": "r1"}', "host"),
        (b'{"release_id": "r1", "host": "h", "lock": "1"}', "lock"),
    ],
)
def test_malformed_work_is_a_typed_refusal_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(MalformedWork) as info:
        DeployWork.parse(data)
    assert info.value.field == field
    assert info.value.code == "MALFORMED_WORK"


def test_webhook_work_carries_the_event_and_its_release() -> None:
    work = WebhookWork(webhook=3, seq=42, event={"type": "release.succeeded"}, release={"id": "r1"})
    assert work.msg_id == "webhook:3:42"
    assert WebhookWork.parse(work.canonical()) == work
    with pytest.raises(MalformedWork) as info:
        WebhookWork.parse(b'{"webhook": 3, "seq": 0, "event": {}, "release": {}}')
    assert info.value.field == "seq"
