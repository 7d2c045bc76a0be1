"""Outgoing webhooks, the pure part: which events go to which webhook, the body per kind, signatures.

Kinds (one module each, behind ``kind.Kind``; listed once in ``registry.KINDS``): ``generic``
(the event's wire JSON, signed with HMAC-SHA256 in ``X-Ferry-Signature``), ``slack`` and
``mattermost`` (``{"text": …}``), ``dingtalk`` and ``feishu`` (their custom-robot text messages,
signed by their own schemes when a secret is set). No I/O here: the notifier loads webhooks,
renders with these functions and posts.
"""

from ferry.domain.webhooks.dingtalk import dingtalk_sign
from ferry.domain.webhooks.feishu import feishu_sign
from ferry.domain.webhooks.generic import SIGNATURE_HEADER, signature, verify_signature
from ferry.domain.webhooks.kind import Kind, Message, Outgoing
from ferry.domain.webhooks.registry import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    KINDS,
    REGISTRY,
    RETRY_DELAYS,
    USER_AGENT,
    delivery_id,
    render,
    retry_delay,
    validate_kind,
    verdict,
)
from ferry.domain.webhooks.routing import (
    DEFAULT_EVENTS,
    MAX_PATTERNS,
    MAX_URL,
    Route,
    event_matches,
    interested,
    validate_events,
    validate_pattern,
    validate_url,
    wants,
)
from ferry.domain.webhooks.text import ReleaseInfo, release_link, summary

__all__ = [
    "DEFAULT_EVENTS",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "KINDS",
    "MAX_PATTERNS",
    "MAX_URL",
    "REGISTRY",
    "RETRY_DELAYS",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "Kind",
    "Message",
    "Outgoing",
    "ReleaseInfo",
    "Route",
    "delivery_id",
    "dingtalk_sign",
    "event_matches",
    "feishu_sign",
    "interested",
    "release_link",
    "render",
    "retry_delay",
    "signature",
    "summary",
    "validate_events",
    "validate_kind",
    "validate_pattern",
    "validate_url",
    "verdict",
    "verify_signature",
    "wants",
]
