"""Bearer credentials -> Principal: users' JWT access tokens and API keys.

``create_app`` installs :func:`resolve_bearer` (``roost.domains`` lists it as identity's
resolver); this module registers nothing when imported.

Every request re-reads the session row (or key row) and the account, so logout,
revocation, suspension and role changes take effect on the very next request; the
JWT only saves the signature-less lookup of an opaque token.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import Select, and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import utcnow
from roost.errors import Unauthorized
from roost.http.deps import get_keys
from roost.identity.common import principal_for
from roost.identity.models import ApiKey, Session, User, UserGroupMembership
from roost.principal import Principal
from roost.security.tokens import decode_access_token, hash_api_key, looks_like_api_key

# last_used_at is written at most this often per key or session.
TOUCH_INTERVAL = timedelta(seconds=60)


def _groups_subquery() -> Any:
    return (
        select(func.coalesce(func.array_agg(UserGroupMembership.group_id), text("'{}'::uuid[]")))
        .where(UserGroupMembership.user_id == User.id)
        .scalar_subquery()
    )


def _active_user(stmt: Select[Any]) -> Select[Any]:
    return stmt.where(User.status == "active", User.is_active.is_(True))


async def _touch(session: AsyncSession, table: type[ApiKey] | type[Session], row_id: uuid.UUID) -> None:
    """Record use in the request's own transaction (one pooled connection per request:
    a second connection here could starve the pool under load).  SKIP LOCKED: a
    concurrent request of the same key neither waits nor writes twice."""
    cutoff = utcnow() - TOUCH_INTERVAL
    locked = (
        select(table.id)
        .where(table.id == row_id, or_(table.last_used_at.is_(None), table.last_used_at < cutoff))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(update(table).where(table.id == locked).values(last_used_at=func.now()))


def _stale(value: object) -> bool:
    return value is None or value < utcnow() - TOUCH_INTERVAL  # type: ignore[operator]


async def resolve_api_key(session: AsyncSession, token: str, request: Request) -> Principal | None:
    digest = hash_api_key(token)
    stmt = _active_user(
        select(User, ApiKey, _groups_subquery())
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(
            ApiKey.key_hash == digest,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
        )
    )
    row: Any = (await session.execute(stmt)).first()
    if row is None:
        return None
    user, key, groups = row[0], row[1], row[2]
    if _stale(key.last_used_at):
        await _touch(session, ApiKey, key.id)
    return principal_for(user, kind="api_key", api_key_id=key.id,
                         group_ids=frozenset(groups or ()))


async def resolve_access_token(
    session: AsyncSession, token: str, request: Request
) -> Principal | None:
    claims = decode_access_token(get_keys(request).secret_key, token)  # 401 if bad/expired
    try:
        user_id = uuid.UUID(str(claims["sub"]))
        session_id = uuid.UUID(str(claims["sid"]))
    except ValueError:
        raise Unauthorized("invalid token") from None
    stmt = _active_user(
        select(User, Session, _groups_subquery())
        .join(Session, and_(Session.user_id == User.id, Session.id == session_id))
        .where(
            User.id == user_id,
            Session.revoked_at.is_(None),
            Session.expires_at > func.now(),
        )
    )
    row: Any = (await session.execute(stmt)).first()
    if row is None:
        raise Unauthorized("session has ended: sign in again")
    user, login, groups = row[0], row[1], row[2]
    if _stale(login.last_used_at):
        await _touch(session, Session, login.id)
    return principal_for(user, kind="session", session_id=login.id,
                         group_ids=frozenset(groups or ()))


async def resolve_bearer(session: AsyncSession, token: str, request: Request) -> Principal | None:
    if looks_like_api_key(token):
        return await resolve_api_key(session, token, request)
    if token.count(".") == 2:  # a JWS compact serialisation
        return await resolve_access_token(session, token, request)
    return None
