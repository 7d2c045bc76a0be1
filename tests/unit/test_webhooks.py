"""Outgoing webhooks, the pure part: routing, body per kind, signatures, verdicts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from ferry.domain import webhooks
from ferry.domain.errors import InvalidInput
from ferry.domain.events import (
    ArtifactPackaged,
    BuildStarted,
    HostFailed,
    HostStepFinished,
    Plan,
    Recipe,
    ReleaseCancelRequested,
    ReleaseFailed,
    ReleaseRequested,
    ReleaseSucceeded,
)
from ferry.domain.release import replay
from ferry.domain.webhooks import ReleaseInfo, Route

NOW = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
PLAN = Plan(recipe=Recipe(repo_url="file:///r", deploy_path="/srv/app"), hosts=("web1",))
REQUESTED = ReleaseRequested(
    release_id="r1",
    version=1,
    at=NOW,
    project="shop",
    environment="prod",
    ref="main",
    requested_by="alice",
    plan=PLAN,
)
FAILED_HOST = HostFailed(
    release_id="r1", version=5, at=NOW, host="web1", step="health", reason="HTTP 503\nretry"
)
SUCCEEDED = ReleaseSucceeded(release_id="r1", version=9, at=NOW)
BUILT = [
    BuildStarted(release_id="r1", version=2, at=NOW),
    ArtifactPackaged(release_id="r1", version=3, at=NOW, digest="a" * 64, size=1, format="zst"),
]


def info(event) -> ReleaseInfo:  # type: ignore[no-untyped-def]
    """The release as ``evolve`` leaves it after ``event`` in a release that was built."""
    return ReleaseInfo.of(replay("r1", [REQUESTED] if event is REQUESTED else [REQUESTED, *BUILT, event]))


def render(kind: str, event=SUCCEEDED, secret: str | None = None, url: str = "https://hooks.example/x", **kw):
    return webhooks.render(
        kind,
        webhook_id=7,
        url=url,
        event=event,
        release=info(event),
        seq=42,
        secret=secret,
        now=NOW,
        **kw,
    )


# --- routing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (("release.failed",), "release.failed", True),
        (("release.failed",), "release.failed2", False),
        (("release.",), "release.succeeded", True),
        (("release.",), "host.failed", False),
        (("host.", "build.failed"), "build.failed", True),
        (("host.", "build.failed"), "build.started", False),
        (webhooks.DEFAULT_EVENTS, "host.step_finished", False),
        (webhooks.DEFAULT_EVENTS, "release.cancelled", True),
    ],
)
def test_event_matches_types_and_prefixes(patterns, event_type, expected):
    assert webhooks.event_matches(patterns, event_type) is expected


def test_wants_filters_on_project_events_and_enabled():
    any_project = Route(1, None, ("release.",))
    shop = Route(2, "shop", ("release.",))
    off = Route(3, None, ("release.",), enabled=False)
    assert webhooks.wants(any_project, "release.failed", "blog")
    assert webhooks.wants(shop, "release.failed", "shop")
    assert not webhooks.wants(shop, "release.failed", "blog")
    assert not webhooks.wants(shop, "host.failed", "shop")
    assert not webhooks.wants(off, "release.failed", "shop")
    assert webhooks.interested([any_project, shop, off], "release.failed") == [any_project, shop]


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T/B/X", "http://127.0.0.1:9000/h?a=1"])
def test_valid_urls(url):
    assert webhooks.validate_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://x/y",
        "hooks.example/x",
        "https://",
        "http://a b/",
        "https://u:p@host/x",
        "http://h:99999/",
        "x" * 3000,
    ],
)
def test_invalid_urls_name_the_url_field(url):
    with pytest.raises(InvalidInput) as exc:
        webhooks.validate_url(url)
    assert exc.value.field == "url"


def test_events_default_dedupe_and_reject_unknown():
    assert webhooks.validate_events(None) == webhooks.DEFAULT_EVENTS
    assert webhooks.validate_events(["host.", "release.failed", "host."]) == ("host.", "release.failed")
    for bad in (["release.exploded"], ["nothing."], [], "release.failed"):
        with pytest.raises(InvalidInput) as exc:
            webhooks.validate_events(bad)  # type: ignore[arg-type]
        assert exc.value.field == "events"
    with pytest.raises(InvalidInput) as kind:
        webhooks.validate_kind("teams")
    assert kind.value.field == "kind"


# --- status and summary ------------------------------------------------------------------------
def test_the_status_sent_is_the_state_evolve_gives():
    def status(*events) -> str:  # type: ignore[no-untyped-def]
        return ReleaseInfo.of(replay("r1", [REQUESTED, *events])).status

    assert status() == "queued"
    assert status(BuildStarted(release_id="r1", version=2, at=NOW)) == "building"
    cancel = ReleaseCancelRequested(release_id="r1", version=2, at=NOW, by="bob")
    assert status(cancel) == "cancelling", "the webhook says what the state says (it said deploying)"
    assert status(SUCCEEDED) == "succeeded"
    assert status(ReleaseFailed(release_id="r1", version=9, at=NOW, reason="x")) == "failed"


def test_summary_is_one_line_and_names_the_release():
    text = webhooks.summary(FAILED_HOST, info(FAILED_HOST))
    assert "\n" not in text
    assert "shop → prod" in text and "r1" in text and "(main)" in text
    assert "host web1 failed at health: HTTP 503 retry" in text
    ok = webhooks.summary(SUCCEEDED, info(SUCCEEDED))
    assert ok.startswith("✅") and ok.endswith("succeeded")
    step = HostStepFinished(
        release_id="r1", version=4, at=NOW, host="web1", step="upload", exit_code=0, duration=1
    )
    assert webhooks.summary(step, info(step)).endswith("web1: upload done")


# --- bodies -------------------------------------------------------------------------------------
def test_generic_body_carries_the_wire_event_release_and_seq_and_is_signed():
    out = render("generic", event=FAILED_HOST, secret="s3cret")
    body = json.loads(out.body)
    assert body == {
        "event": json.loads(FAILED_HOST.to_json()),
        "release": {
            "id": "r1",
            "project": "shop",
            "environment": "prod",
            "ref": "main",
            "status": "deploying",
        },
        "seq": 42,
    }
    assert out.headers["X-Ferry-Event"] == "host.failed"
    assert out.headers["X-Ferry-Delivery"] == "7-42"
    assert out.headers["Content-Type"].startswith("application/json")
    expected = "sha256=" + hmac.new(b"s3cret", out.body, hashlib.sha256).hexdigest()
    assert out.headers["X-Ferry-Signature"] == expected
    assert webhooks.verify_signature("s3cret", out.body, expected)
    assert not webhooks.verify_signature("other", out.body, expected)
    assert out.url == "https://hooks.example/x"


def test_generic_body_without_secret_is_unsigned():
    assert "X-Ferry-Signature" not in render("generic").headers


def test_slack_text_escapes_and_links_the_portal():
    event = ReleaseFailed(release_id="r1", version=9, at=NOW, reason="a <b> & c")
    out = render("slack", event=event, public_url="https://ferry.example/")
    (text,) = json.loads(out.body).values()
    assert list(json.loads(out.body)) == ["text"]
    assert "a &lt;b&gt; &amp; c" in text
    assert text.endswith("<https://ferry.example/releases/r1|open in ferry>")
    assert "\n" not in text


def test_slack_without_public_url_has_no_link():
    assert "http" not in json.loads(render("slack").body)["text"]


def test_mattermost_uses_a_markdown_link():
    text = json.loads(render("mattermost", public_url="https://ferry.example").body)["text"]
    assert text.endswith("[open in ferry](https://ferry.example/releases/r1)")


def test_dingtalk_body_and_signed_query():
    url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
    plain = render("dingtalk", url=url)
    assert plain.url == url
    assert json.loads(plain.body) == {
        "msgtype": "text",
        "text": {"content": webhooks.summary(SUCCEEDED, info(SUCCEEDED))},
    }

    signed = render("dingtalk", url=url, secret="SECabc")
    query = parse_qs(urlsplit(signed.url).query)
    ms = int(NOW.timestamp() * 1000)
    assert query["access_token"] == ["abc"] and query["timestamp"] == [str(ms)]
    # DingTalk's documented scheme: HmacSHA256 keyed by the secret over "timestamp\nsecret", base64.
    digest = hmac.new(b"SECabc", f"{ms}\nSECabc".encode(), hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]
    assert signed.body == plain.body


def test_feishu_body_and_signature_in_the_body():
    plain = json.loads(render("feishu").body)
    assert plain == {"msg_type": "text", "content": {"text": plain["content"]["text"]}}
    assert "r1" in plain["content"]["text"]

    signed = json.loads(render("feishu", secret="fsecret").body)
    s = int(NOW.timestamp())
    assert signed["timestamp"] == str(s)
    # Feishu's documented scheme: HmacSHA256 keyed by "timestamp\nsecret" over an empty message, base64.
    digest = hmac.new(f"{s}\nfsecret".encode(), b"", hashlib.sha256).digest()
    assert signed["sign"] == base64.b64encode(digest).decode()
    assert signed["msg_type"] == "text" and signed["content"] == plain["content"]


def test_outgoing_repr_hides_the_url():
    out = render("dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=tok", secret="SEC")
    assert "tok" not in repr(out) and "SEC" not in repr(out)


# --- verdicts and retries ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "status", "answer", "expected"),
    [
        ("generic", 200, b"", "delivered"),
        ("generic", 204, b"", "delivered"),
        ("generic", 500, b"", "retry"),
        ("generic", 503, b"", "retry"),
        ("slack", 429, b"", "retry"),
        ("generic", 404, b"", "give_up"),
        ("generic", 400, b"", "give_up"),
        ("generic", 301, b"", "give_up"),
        ("dingtalk", 200, b'{"errcode":0,"errmsg":"ok"}', "delivered"),
        ("dingtalk", 200, b'{"errcode":310000,"errmsg":"sign not match"}', "give_up"),
        ("feishu", 200, b'{"code":0,"msg":"success"}', "delivered"),
        ("feishu", 200, b'{"code":19021,"msg":"sign match fail"}', "give_up"),
        ("feishu", 200, b"not json", "delivered"),
    ],
)
def test_verdicts(kind, status, answer, expected):
    outcome, why = webhooks.verdict(kind, status, answer)
    assert outcome == expected
    assert (why is None) == (expected == "delivered")


def test_retry_delays_are_bounded():
    delays = [webhooks.retry_delay(n) for n in range(1, 7)]
    assert delays[:5] == list(webhooks.RETRY_DELAYS) and delays[5] is None
    assert 240 <= sum(webhooks.RETRY_DELAYS) <= 330  # six attempts over about five minutes
    assert webhooks.retry_delay(0) is None
    assert webhooks.retry_delay(2, (0.01, 0.02)) == 0.02
