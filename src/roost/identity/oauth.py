"""Third-party OAuth tokens per (user, service) (``user_oauth_tokens``).

Both tokens are AES-256-GCM ciphertexts (``SecretBox``, key ``ROOST_SECRETS_KEY``) whose
associated data names the user, the service and the field, so a ciphertext copied into
another row does not decrypt.  The API returns metadata and a four-character hint,
never a token; other domains call :func:`get_credentials` to use them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow
from roost.errors import NotFound, Unprocessable
from roost.identity.common import (
    existing_target_user_id,
    load_user,
    lock_owner_quota,
    target_user_id,
)
from roost.identity.config import IdentityConfig
from roost.identity.models import UserOAuthToken
from roost.principal import Principal

SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_TOKEN_LENGTH = 8192
_UNSET: Any = object()


def _aad(user_id: uuid.UUID, service: str, field: str) -> bytes:
    return b"oauth:" + user_id.bytes + b":" + service.encode() + b":" + field.encode()


def check_service(service: str) -> str:
    if not SERVICE_RE.fullmatch(service):
        raise Unprocessable("service must be 1-64 characters of a-z, 0-9, '.', '_', '-' "
                            "(e.g. google_calendar)", extra={"field": "service"})
    return service


def _check_token(value: str, field: str) -> None:
    if not value or len(value) > MAX_TOKEN_LENGTH:
        raise Unprocessable(f"{field} must be 1-{MAX_TOKEN_LENGTH} characters",
                            extra={"field": field})


@dataclass(frozen=True)
class TokenView:
    """What the API shows: never the tokens."""

    service: str
    scope: str | None
    token_expiry: datetime | None
    expired: bool
    has_refresh_token: bool
    access_token_hint: str
    service_user_id: str | None
    service_email: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Credentials:
    access_token: str
    refresh_token: str | None
    token_expiry: datetime | None
    scope: str | None

    def __repr__(self) -> str:
        return f"Credentials(<redacted>, expiry={self.token_expiry!r}, scope={self.scope!r})"


def view(cfg: IdentityConfig, row: UserOAuthToken) -> TokenView:
    access = cfg.box.decrypt_str(row.access_token_encrypted,
                                 _aad(row.user_id, row.service, "access_token"))
    return TokenView(
        service=row.service, scope=row.scope, token_expiry=row.token_expiry,
        expired=row.token_expiry is not None and row.token_expiry <= utcnow(),
        has_refresh_token=row.refresh_token_encrypted is not None,
        access_token_hint="..." + access[-4:] if len(access) >= 12 else "...",
        service_user_id=row.service_user_id, service_email=row.service_email,
        created_at=row.created_at, updated_at=row.updated_at,
    )


async def _get(session: AsyncSession, owner: uuid.UUID, service: str, *,
               lock: bool = False) -> UserOAuthToken | None:
    stmt = select(UserOAuthToken).where(UserOAuthToken.user_id == owner,
                                        UserOAuthToken.service == service)
    return await session.scalar(stmt.with_for_update() if lock else stmt)


async def store(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, service: str, *,
    access_token: str, refresh_token: str | None = None, token_expiry: datetime | None = None,
    scope: str | None = None, service_user_id: str | None = None,
    service_email: str | None = None, user_id: uuid.UUID | None = None,
) -> UserOAuthToken:
    """Create or replace the tokens for (user, service)."""
    owner = target_user_id(principal, user_id)
    await load_user(session, owner)
    check_service(service)
    _check_token(access_token, "access_token")
    if refresh_token is not None:
        _check_token(refresh_token, "refresh_token")
    # One store per (owner, service) at a time: two first stores at once would both
    # insert (a 409 for one); the second now waits, finds the row and replaces it.
    # The row lock makes a store racing a disconnect wait for it, then insert anew.
    await lock_owner_quota(session, owner, f"oauth:{service}")
    row = await _get(session, owner, service, lock=True)
    created = row is None
    if row is None:
        row = UserOAuthToken(user_id=owner, service=service, access_token_encrypted="")
        session.add(row)
    row.access_token_encrypted = cfg.box.encrypt(
        access_token, _aad(owner, service, "access_token")).decode("ascii")
    row.refresh_token_encrypted = cfg.box.encrypt(
        refresh_token, _aad(owner, service, "refresh_token")).decode("ascii") \
        if refresh_token is not None else None
    row.token_expiry, row.scope = token_expiry, scope
    row.service_user_id, row.service_email = service_user_id, service_email
    await session.flush()
    await record(session, "oauth.connected" if created else "oauth.replaced",
                 user_id=principal.user_id or owner, resource_type="oauth_token",
                 resource_id=row.id, changes={"service": service, "owner": str(owner),
                                              "scope": scope})
    return row


async def update_after_refresh(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, service: str, *,
    access_token: str | None = None, refresh_token: str | None = None,
    token_expiry: datetime | None = _UNSET, scope: str | None = _UNSET,
    user_id: uuid.UUID | None = None,
) -> UserOAuthToken:
    """After refreshing with the provider: new access token, expiry, scope (and a new
    refresh token when the provider rotated it)."""
    owner = await existing_target_user_id(session, principal, user_id)  # "no such user"
    check_service(service)
    # Locked: a refresh racing a disconnect waits for it, then answers 404.
    row = await _get(session, owner, service, lock=True)
    if row is None:
        raise NotFound(f"no tokens stored for {service}")
    changed: list[str] = []
    if access_token is not None:
        _check_token(access_token, "access_token")
        row.access_token_encrypted = cfg.box.encrypt(
            access_token, _aad(owner, service, "access_token")).decode("ascii")
        changed.append("access_token")
    if refresh_token is not None:
        _check_token(refresh_token, "refresh_token")
        row.refresh_token_encrypted = cfg.box.encrypt(
            refresh_token, _aad(owner, service, "refresh_token")).decode("ascii")
        changed.append("refresh_token")
    if token_expiry is not _UNSET:
        row.token_expiry = token_expiry
        changed.append("token_expiry")
    if scope is not _UNSET:
        row.scope = scope
        changed.append("scope")
    if not changed:
        return row  # no field sent: nothing refreshed, no record, updated_at unchanged
    row.updated_at = utcnow()
    await session.flush()
    await record(session, "oauth.refreshed", user_id=principal.user_id or owner,
                 resource_type="oauth_token", resource_id=row.id,
                 metadata={"service": service, "fields": changed})
    return row


async def list_tokens(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None
) -> list[UserOAuthToken]:
    owner = await existing_target_user_id(session, principal, user_id)
    return list((await session.scalars(
        select(UserOAuthToken).where(UserOAuthToken.user_id == owner)
        .order_by(UserOAuthToken.service)
    )).all())


async def get_token(
    session: AsyncSession, principal: Principal, service: str, user_id: uuid.UUID | None = None,
    *, lock: bool = False,
) -> UserOAuthToken:
    owner = await existing_target_user_id(session, principal, user_id)  # "no such user"
    row = await _get(session, owner, check_service(service), lock=lock)
    if row is None:
        raise NotFound(f"no tokens stored for {service}")
    return row


async def get_credentials(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, service: str,
    user_id: uuid.UUID | None = None,
) -> Credentials:
    """Decrypted tokens, for server-side use only (never put them in an API answer)."""
    row = await get_token(session, principal, service, user_id)
    aad_owner = row.user_id
    refresh = cfg.box.decrypt_str(row.refresh_token_encrypted,
                                  _aad(aad_owner, row.service, "refresh_token")) \
        if row.refresh_token_encrypted else None
    return Credentials(
        access_token=cfg.box.decrypt_str(row.access_token_encrypted,
                                         _aad(aad_owner, row.service, "access_token")),
        refresh_token=refresh, token_expiry=row.token_expiry, scope=row.scope,
    )


async def delete_token(
    session: AsyncSession, principal: Principal, service: str, user_id: uuid.UUID | None = None
) -> None:
    # Locked: a second disconnect at once waits, then finds it gone (404, one record).
    row = await get_token(session, principal, service, user_id, lock=True)
    await session.delete(row)
    await session.flush()
    await record(session, "oauth.disconnected", user_id=principal.user_id or row.user_id,
                 resource_type="oauth_token", resource_id=row.id,
                 changes={"service": service, "owner": str(row.user_id)})
