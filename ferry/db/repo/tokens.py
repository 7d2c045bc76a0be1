"""API tokens: stored as hashes, with role, last use and revocation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ferry.db.models import ApiToken
from ferry.domain import auth
from ferry.domain.errors import Conflict, InvalidInput, NotFound

from ._common import _choice, _name, _write


@dataclass(frozen=True)
class TokenInfo:
    """A token without its secret: only ``create_token``'s caller ever sees the token itself."""

    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None


def _token_info(t: ApiToken) -> TokenInfo:
    return TokenInfo(t.id, t.name, t.role, t.created_at, t.last_used_at)


def _token(session: Session, name: str, field: str = "name") -> ApiToken:
    t = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if t is None:
        raise NotFound(f"no API token named {name!r}", field=field)
    return t


def create_token(session: Session, name: str, role: str, token_hash: str) -> TokenInfo:
    """Record a token by its sha256 (``ferry.domain.auth.hash_token``); the token itself is never stored."""
    _name(name)
    _choice(role, auth.ROLES, "role")
    if not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise InvalidInput("token_hash must be 64 lowercase hex digits (sha256)", field="token")
    t = ApiToken(name=name, role=role, token_hash=token_hash)
    with _write(session, exists=f"an API token named {name!r} already exists"):
        session.add(t)
    return _token_info(t)


def ensure_token(session: Session, name: str, role: str, token_hash: str) -> TokenInfo:
    """Make ``name`` the token with this hash and role, creating it or replacing its secret."""
    t = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if t is None:
        return create_token(session, name, role, token_hash)
    if t.token_hash != token_hash or t.role != role:
        with _write(session, exists="another API token has the same secret", field="token"):
            t.token_hash, t.role = token_hash, role
    return _token_info(t)


def token_exists(session: Session, name: str) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None


def admin_token_exists(session: Session, *, besides: str | None = None) -> bool:
    """Whether any admin token (other than ``besides``) exists."""
    query = select(ApiToken.id).where(ApiToken.role == "admin")
    if besides is not None:
        query = query.where(ApiToken.name != besides)
    return session.scalar(query.limit(1)) is not None


def get_token(session: Session, name: str) -> TokenInfo:
    return _token_info(_token(session, name))


def list_tokens(session: Session) -> list[TokenInfo]:
    return [_token_info(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(session: Session, name: str) -> None:
    """Delete a token: the next request that presents it is refused. The last admin token stays
    (with auth on, nobody could make another through the API)."""
    t = _token(session, name)
    if t.role == "admin" and not admin_token_exists(session, besides=name):
        raise Conflict(
            f"{name!r} is the last admin token: create another admin token first, or everyone is locked out",
            field="name",
        )
    with _write(session, exists=f"API token {name!r} changed concurrently"):
        session.delete(t)


def token_by_hash(session: Session, token_hash: str) -> TokenInfo | None:
    """The token whose sha256 is ``token_hash``, or None.

    The lookup is an indexed equality on a hash of a 256-bit secret, so its timing tells a
    caller nothing usable; the final comparison is constant-time all the same.
    """
    t = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
    if t is None or not auth.same_hash(t.token_hash, token_hash):
        return None
    return _token_info(t)


def touch_token(session: Session, token_id: int, now: datetime, interval: float) -> bool:
    """Set ``last_used_at = now`` unless it was set within ``interval`` seconds; True if written."""
    cutoff = now - timedelta(seconds=interval)
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id)
        .where((ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < cutoff))
        .values(last_used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
