"""``feishu``: a custom bot's text message; with a secret, signed in the body."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from ferry.domain.webhooks.kind import Message, Outgoing, as_json, error_code_refusal


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu custom bot: base64(HMAC-SHA256(key="<timestamp s>\\n<secret>", msg=b""))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class Feishu:
    name = "feishu"

    def render(self, message: Message) -> Outgoing:
        plain = message.text + (f" {message.link}" if message.link else "")
        payload: dict[str, Any] = {"msg_type": "text", "content": {"text": plain}}
        if message.secret:
            s = int(message.now.timestamp())
            payload = {"timestamp": str(s), "sign": feishu_sign(message.secret, s), **payload}
        return Outgoing(message.url, as_json(payload), dict(message.headers))

    def refusal(self, body: bytes) -> str | None:
        return error_code_refusal(self.name, body)


KIND = Feishu()
