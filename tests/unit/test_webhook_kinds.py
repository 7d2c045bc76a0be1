"""The webhook kinds' registry: one module per kind, the vocabulary's names, one dispatch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ferry.domain import webhooks
from ferry.domain.errors import InvalidInput
from ferry.domain.events import Plan, Recipe, ReleaseRequested
from ferry.domain.release import replay
from ferry.domain.vocabulary import WEBHOOK_KINDS
from ferry.domain.webhooks import Message, Outgoing, ReleaseInfo

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
REQUESTED = ReleaseRequested(
    release_id="r1",
    version=1,
    at=NOW,
    project="shop",
    environment="prod",
    ref="main",
    requested_by="alice",
    plan=Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("web1",)),
)


def test_the_registry_names_exactly_the_vocabulary_kinds_in_its_order() -> None:
    assert tuple(webhooks.REGISTRY) == WEBHOOK_KINDS == webhooks.KINDS
    for name, kind in webhooks.REGISTRY.items():
        assert kind.name == name


@pytest.mark.parametrize("name", WEBHOOK_KINDS)
def test_every_kind_renders_a_json_post_with_the_common_headers(name: str) -> None:
    out = webhooks.render(
        name,
        webhook_id=3,
        url="https://hooks.example/x",
        event=REQUESTED,
        release=ReleaseInfo.of(replay("r1", [REQUESTED])),
        seq=9,
        secret="s3cret",
        now=NOW,
        public_url="https://ferry.example",
    )
    assert isinstance(out, Outgoing)
    assert out.headers["X-Ferry-Event"] == "release.requested"
    assert out.headers["X-Ferry-Delivery"] == "3-9"
    assert isinstance(json.loads(out.body), dict)
    assert out.url.startswith("https://hooks.example/x")


def test_an_unknown_kind_is_refused_by_name_everywhere() -> None:
    with pytest.raises(InvalidInput, match="kind must be one of generic, slack"):
        webhooks.validate_kind("teams")
    with pytest.raises(InvalidInput):
        webhooks.verdict("teams", 200, b"")


def test_a_kind_is_a_plain_object_meeting_the_protocol() -> None:
    class Echo:
        name = "echo"

        def render(self, message: Message) -> Outgoing:
            return Outgoing(message.url, message.text.encode(), dict(message.headers))

        def refusal(self, body: bytes) -> str | None:
            return "no" if body == b"no" else None

    kind: webhooks.Kind = Echo()
    message = Message(
        url="https://x.example",
        event=REQUESTED,
        release=ReleaseInfo.of(replay("r1", [REQUESTED])),
        seq=1,
        secret=None,
        now=NOW,
        text="hello",
        link=None,
        headers={},
    )
    assert kind.render(message).body == b"hello"
    assert kind.refusal(b"no") == "no"


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("dingtalk", b'{"errcode": 310000, "errmsg": "sign not match"}', "give_up"),
        ("feishu", b'{"code": 19021, "msg": "sign match fail"}', "give_up"),
        ("feishu", b'{"StatusCode": 0}', "delivered"),
        ("slack", b'{"errcode": 1}', "delivered"),
        ("generic", b"not json", "delivered"),
    ],
)
def test_a_2xx_is_judged_by_the_kind(name: str, body: bytes, expected: str) -> None:
    assert webhooks.verdict(name, 200, body)[0] == expected
