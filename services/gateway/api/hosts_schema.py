"""The bodies of ``/api/hosts``: where a host is, who ferry logs in as, and its pinned key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from ferry.domain.agentgroups import DEFAULT_GROUP
from ferry.domain.vocabulary import HostKeyPolicy
from services.gateway.api.bodies import Input, Output, Patch
from services.gateway.api.fields import Address, AgentGroup, HostKey, Integral, Name, User
from services.gateway.api.schemarules import ferry_error, when


class HostFields(Input):
    model_config = ConfigDict(
        json_schema_extra=when(
            "host_key_policy",
            "pinned",
            {
                "required": ["host_key"],
                "properties": {"host_key": {"type": "string", "format": "ssh-public-key"}},
            },
            default=True,
        )
    )

    address: Address
    port: Annotated[int, Field(ge=1, le=65535), Integral] = 22
    user: User = "root"
    credential: Name
    host_key: HostKey | None = Field(
        default=None, description="the host's public key line, e.g. 'ssh-ed25519 AAAA…'"
    )
    host_key_policy: HostKeyPolicy = Field(
        default="pinned",
        description="pinned: refuse any key but host_key; tofu: record the key seen on first connection",
    )
    agent_group: AgentGroup = DEFAULT_GROUP

    @model_validator(mode="after")
    def _pinned_needs_key(self) -> HostFields:
        if self.host_key_policy == "pinned" and self.host_key is None:
            raise ferry_error(
                "a pinned host needs its host key (or choose host_key_policy 'tofu')", loc="host_key"
            )
        return self


class HostIn(HostFields):
    name: Name


class HostPatch(Patch):
    NULLABLE = frozenset({"host_key"})

    address: Address | None = None
    port: Annotated[int, Field(ge=1, le=65535), Integral] | None = None
    user: User | None = None
    credential: Name | None = None
    host_key: HostKey | None = None
    host_key_policy: HostKeyPolicy | None = None
    agent_group: AgentGroup | None = None


class HostOut(Output):
    name: str
    address: str
    port: int
    user: str
    credential: str | None
    host_key: str | None
    host_key_policy: HostKeyPolicy
    agent_group: str
    created_at: datetime


class HostList(Output):
    hosts: list[HostOut]
