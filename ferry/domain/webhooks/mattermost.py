"""``mattermost``: an incoming-webhook message ``{"text": …}`` in Markdown, linking to the portal."""

from __future__ import annotations

from ferry.domain.webhooks.kind import Message, Outgoing, as_json


class Mattermost:
    name = "mattermost"

    def render(self, message: Message) -> Outgoing:
        line = message.text + (f" [open in ferry]({message.link})" if message.link else "")
        return Outgoing(message.url, as_json({"text": line}), dict(message.headers))

    def refusal(self, body: bytes) -> str | None:
        return None


KIND = Mattermost()
