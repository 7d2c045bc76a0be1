"""``dingtalk``: a custom robot's text message; with a secret, signed in the URL's query."""

from __future__ import annotations

import base64
import hashlib
import hmac

from ferry.domain.webhooks.kind import Message, Outgoing, as_json, error_code_refusal, with_query


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk custom robot: base64(HMAC-SHA256(key=secret, msg="<timestamp ms>\\n<secret>"))."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()).decode()


class DingTalk:
    name = "dingtalk"

    def render(self, message: Message) -> Outgoing:
        plain = message.text + (f" {message.link}" if message.link else "")
        target = message.url
        if message.secret:
            ms = int(message.now.timestamp() * 1000)
            target = with_query(target, {"timestamp": str(ms), "sign": dingtalk_sign(message.secret, ms)})
        body = as_json({"msgtype": "text", "text": {"content": plain}})
        return Outgoing(target, body, dict(message.headers))

    def refusal(self, body: bytes) -> str | None:
        return error_code_refusal(self.name, body)


KIND = DingTalk()
