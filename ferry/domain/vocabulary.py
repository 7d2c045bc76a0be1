"""The words ferry's API, database and core share: each enumeration written once.

Each is a ``Literal`` (what type checkers and the API's pydantic models use) and the tuple of
its values derived from it (what the repository checks, the SQL ``CHECK`` constraints in
``ferry/db/models.py`` and messages use), so adding a value here changes all of them.
Migrations keep the values of their day; a new value needs a migration that widens the CHECK.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

CredentialKind = Literal["ssh_key", "password"]
CREDENTIAL_KINDS: Final[tuple[CredentialKind, ...]] = get_args(CredentialKind)

HostKeyPolicy = Literal["pinned", "tofu"]
"""pinned: refuse any key but the recorded one; tofu: record the key seen on first connection."""
HOST_KEY_POLICIES: Final[tuple[HostKeyPolicy, ...]] = get_args(HostKeyPolicy)

Strategy = Literal["all", "rolling", "canary"]
"""How a release rolls out over an environment's hosts (``ferry.domain.events.Plan``)."""
STRATEGIES: Final[tuple[Strategy, ...]] = get_args(Strategy)

OnBusy = Literal["queue", "reject"]
"""What a request does while another release holds the environment: wait its turn, or 409."""
ON_BUSY: Final[tuple[OnBusy, ...]] = get_args(OnBusy)

WebhookKind = Literal["generic", "slack", "mattermost", "dingtalk", "feishu"]
WEBHOOK_KINDS: Final[tuple[WebhookKind, ...]] = get_args(WebhookKind)

DeliveryStatus = Literal["retrying", "delivered", "failed"]
"""A webhook delivery's state: being retried, delivered, or given up."""
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)

Role = Literal["viewer", "deployer", "admin"]
"""API token roles, in increasing order of power (``ferry.domain.auth.allows``)."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)

ArtifactFormat = Literal["zst", "gz", "none"]
ARTIFACT_FORMATS: Final[tuple[ArtifactFormat, ...]] = get_args(ArtifactFormat)

HealthKind = Literal["none", "command", "http"]
HEALTH_KINDS: Final[tuple[HealthKind, ...]] = get_args(HealthKind)


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """A ``CHECK`` constraint's text: ``column IN ('a', 'b')`` (values are ferry's own words)."""
    for value in values:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"not a plain word: {value!r}")
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
