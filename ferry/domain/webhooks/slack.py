"""``slack``: an incoming-webhook message ``{"text": …}`` in Slack's mrkdwn, linking to the portal."""

from __future__ import annotations

from ferry.domain.webhooks.kind import Message, Outgoing, as_json


def escape(text: str) -> str:
    # Slack's mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack:
    name = "slack"

    def render(self, message: Message) -> Outgoing:
        line = escape(message.text) + (f" <{message.link}|open in ferry>" if message.link else "")
        return Outgoing(message.url, as_json({"text": line}), dict(message.headers))

    def refusal(self, body: bytes) -> str | None:
        return None


KIND = Slack()
