"""The bodies of ``/api/tokens``: a token's name and role; the token itself once, at creation."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ferry.domain.vocabulary import Role
from services.gateway.api.bodies import Input, Output
from services.gateway.api.fields import Name


class TokenIn(Input):
    name: Name = Field(description="who or what uses the token; releases record it as requested_by")
    role: Role = Field(
        description="viewer: read; deployer: also release, approve, reject, cancel, roll back; "
        "admin: everything"
    )


class TokenOut(Output):
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None = Field(description="updated at most once a minute")


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown in this answer only, never again")


class TokenList(Output):
    tokens: list[TokenOut]
