"""``generic``: the event's wire JSON with its release, signed with HMAC-SHA256 in ``X-Ferry-Signature``."""

from __future__ import annotations

import hashlib
import hmac

from ferry.domain.webhooks.kind import Message, Outgoing, as_json

SIGNATURE_HEADER = "X-Ferry-Signature"


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body keyed with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: compare the header with the body's signature in constant time."""
    return hmac.compare_digest(signature(secret, body), header)


class Generic:
    name = "generic"

    def render(self, message: Message) -> Outgoing:
        body = as_json(
            {
                "event": message.event.model_dump(mode="json"),
                "release": message.release.as_json(),
                "seq": message.seq,
            }
        )
        headers = dict(message.headers)
        if message.secret:
            headers[SIGNATURE_HEADER] = signature(message.secret, body)
        return Outgoing(message.url, body, headers)

    def refusal(self, body: bytes) -> str | None:
        return None


KIND = Generic()
