"""API keys: shown once, stored as SHA-256, listed by prefix, revocable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow
from roost.errors import BadRequest, Unauthorized, Unprocessable
from roost.identity.common import (
    existing_target_user_id,
    load_user,
    lock_owner_quota,
    owned_row,
    target_user_id,
)
from roost.identity.models import ApiKey
from roost.inputs import is_blank
from roost.principal import Principal
from roost.security.tokens import generate_api_key

MAX_KEYS_PER_USER = 100
MAX_REVOKED_LISTED = 100  # ?include_revoked=true lists the most recently revoked this many
ENDED_KEY_RETENTION = timedelta(days=30)  # then the hourly clean-up deletes a key


@dataclass(frozen=True)
class CreatedKey:
    key: str  # the full key: returned once, never stored
    row: ApiKey


async def create_api_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    expires_at: datetime | None = None,
    user_id: uuid.UUID | None = None,
) -> CreatedKey:
    owner = target_user_id(principal, user_id)
    await load_user(session, owner)
    name = name.strip()
    if is_blank(name) or len(name) > 100:  # zero-width characters alone show nothing
        raise Unprocessable("key name must be 1-100 characters", extra={"field": "name"})
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise Unprocessable("expires_at needs a time zone (e.g. 'Z')",
                                extra={"field": "expires_at"})
        if expires_at <= utcnow():
            raise Unprocessable("expires_at must be in the future", extra={"field": "expires_at"})
    # Count and insert as one step; and a key's revocation or new limits (which take
    # this lock too) wait for a key being made with it, or it reads them: no key escapes
    # its parent's revocation or throttle by being made at the same moment.
    await lock_owner_quota(session, owner, "api_keys")
    parent = None
    if principal.api_key_id is not None and owner == principal.user_id:
        parent = (await session.execute(
            select(ApiKey.rate_limit_rpm, ApiKey.rate_limit_streams, ApiKey.expires_at,
                   ApiKey.root_key_id)
            .where(ApiKey.id == principal.api_key_id, ApiKey.revoked_at.is_(None),
                   or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()))
            .with_for_update(read=True))).one_or_none()
        if parent is None:
            raise Unauthorized("the API key this request is made with was revoked or has "
                               "expired")
    if parent is not None and parent.expires_at is not None:
        # A key made with a key that expires expires no later: a leaked short-lived key
        # must not mint its holder a permanent one.
        if expires_at is None:
            expires_at = parent.expires_at
        elif expires_at > parent.expires_at:
            raise Unprocessable(
                "expires_at must not be later than the expiry of the API key this request "
                f"is made with ({parent.expires_at.isoformat()})", extra={"field": "expires_at"})
    count = len((await session.scalars(
        select(ApiKey.id).where(ApiKey.user_id == owner, ApiKey.revoked_at.is_(None),
                                or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()))
    )).all())
    if count >= MAX_KEYS_PER_USER:
        raise BadRequest(f"an account may hold at most {MAX_KEYS_PER_USER} active keys; "
                         "revoke unused ones first")
    full_key, prefix, digest = generate_api_key()
    row = ApiKey(user_id=owner, name=name, prefix=prefix, key_hash=digest, expires_at=expires_at)
    if parent is not None:
        # A key made with a key keeps that key's own limits: a holder of a key an
        # administrator throttled must not mint themself an unthrottled one.
        row.rate_limit_rpm, row.rate_limit_streams = parent.rate_limit_rpm, parent.rate_limit_streams
        # ... and ends with it: revoking a leaked key must not leave what it minted working.
        row.parent_key_id = principal.api_key_id
        row.root_key_id = parent.root_key_id or principal.api_key_id  # one family's counters
    session.add(row)
    await session.flush()
    await record(
        session, "api_key.created", user_id=principal.user_id or owner, resource_type="api_key",
        resource_id=row.id, changes={"owner": str(owner), "name": name, "prefix": prefix,
                                     "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return CreatedKey(key=full_key, row=row)


async def list_api_keys(
    session: AsyncSession, principal: Principal, *, user_id: uuid.UUID | None = None,
    include_revoked: bool = False,
) -> list[ApiKey]:
    """The owner's live keys (at most MAX_KEYS_PER_USER) and the MAX_REVOKED_LISTED that
    expired most recently, newest first; with ``include_revoked``, also the
    MAX_REVOKED_LISTED most recently revoked: a loop that creates keys that expire, or
    revokes them, must not grow one answer without end (expired keys do not count
    against the cap, so they grew it until the 30-day clean-up)."""
    owner = await existing_target_user_id(session, principal, user_id)
    stmt = select(ApiKey).where(ApiKey.user_id == owner).order_by(ApiKey.created_at.desc())
    unrevoked = (ApiKey.user_id == owner, ApiKey.revoked_at.is_(None))
    newest_expired = (
        select(ApiKey.id).where(*unrevoked, ApiKey.expires_at <= func.now())
        .order_by(ApiKey.expires_at.desc()).limit(MAX_REVOKED_LISTED))
    kept = [and_(ApiKey.revoked_at.is_(None),
                 or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now())),
            ApiKey.id.in_(newest_expired)]
    if include_revoked:
        kept.append(ApiKey.id.in_(
            select(ApiKey.id).where(ApiKey.user_id == owner, ApiKey.revoked_at.is_not(None))
            .order_by(ApiKey.revoked_at.desc()).limit(MAX_REVOKED_LISTED)))
    return list((await session.scalars(stmt.where(or_(*kept)))).all())


async def purge_ended(session: AsyncSession) -> int:
    """Delete keys revoked or expired more than ENDED_KEY_RETENTION ago (identity's hourly
    clean-up): no key works again, the audit log keeps their history, and usage rows
    keep their ids without a foreign key."""
    cutoff = func.now() - ENDED_KEY_RETENTION
    ended = await session.execute(
        delete(ApiKey).where(or_(ApiKey.revoked_at < cutoff, ApiKey.expires_at < cutoff)))
    return int(ended.rowcount)  # type: ignore[attr-defined]


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """Revoke the key and every key made with it, transitively (idempotent: revoking it
    again changes and records nothing).  The revocation is a conditional ``UPDATE``, so of
    several at once exactly one revokes and records each key; the others see it revoked."""
    row = await owned_row(session, principal, ApiKey, key_id, "API key")
    await lock_owner_quota(session, row.user_id, "api_keys")  # after a key being made now
    made_from = (
        select(ApiKey.id.label("id")).where(ApiKey.id == row.id).cte("made_from", recursive=True))
    made_from = made_from.union(
        select(ApiKey.id).join(made_from, ApiKey.parent_key_id == made_from.c.id))
    revoked = (await session.execute(
        update(ApiKey).where(ApiKey.id.in_(select(made_from.c.id)), ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow()).returning(ApiKey.id, ApiKey.user_id, ApiKey.prefix)
        .execution_options(synchronize_session=False))).all()
    await session.refresh(row)
    for key in sorted(revoked, key=lambda k: k.id != row.id):  # the key asked for first
        changes = {"owner": str(key.user_id), "prefix": key.prefix}
        if key.id != row.id:
            changes["made_with"] = row.prefix  # revoked because the key it descends from was
        await record(
            session, "api_key.revoked", user_id=principal.user_id or key.user_id,
            resource_type="api_key", resource_id=key.id, changes=changes,
        )
    return row
