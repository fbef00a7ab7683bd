"""TOTP two-factor authentication with ten single-use backup codes.

Enrolment: ``setup`` stores a new secret (encrypted, not yet enabled) and returns the
``otpauth://`` URI; ``confirm`` with a current code enables it and returns the backup
codes, shown once and stored as SHA-256 digests.  Disabling (and regenerating the
codes) needs a current code, so a stolen session alone cannot remove the second factor.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow
from roost.errors import BadRequest, Conflict, Forbidden, NotFound
from roost.identity import throttle
from roost.identity.common import load_user, require_user
from roost.identity.config import IdentityConfig
from roost.identity.models import UserTwoFactorAuth
from roost.principal import Principal
from roost.security.totp import (
    TOTP_DIGITS,
    generate_backup_codes,
    hash_backup_code,
    match_backup_code,
    new_totp_secret,
    provisioning_uri,
    verify_totp,
)

BACKUP_CODE_COUNT = 10


def _aad(user_id: uuid.UUID) -> bytes:
    return b"totp:" + user_id.bytes


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class Status:
    enabled: bool
    pending: bool
    backup_codes_remaining: int


async def _row(session: AsyncSession, user_id: uuid.UUID) -> UserTwoFactorAuth | None:
    return await session.scalar(
        select(UserTwoFactorAuth).where(UserTwoFactorAuth.user_id == user_id).with_for_update()
    )


def _remaining(row: UserTwoFactorAuth | None) -> int:
    return sum(1 for c in (row.backup_codes or []) if c) if row is not None else 0


async def status(session: AsyncSession, principal: Principal) -> Status:
    row = await _row(session, require_user(principal))
    return Status(
        enabled=bool(row and row.is_enabled),
        pending=bool(row and not row.is_enabled and row.secret_key_encrypted),
        backup_codes_remaining=_remaining(row),
    )


async def setup(session: AsyncSession, cfg: IdentityConfig, principal: Principal) -> Enrolment:
    user = await load_user(session, require_user(principal))
    row = await _row(session, user.id)
    if row is not None and row.is_enabled:
        raise Conflict("two-factor authentication is already on; disable it first to re-enrol")
    secret = new_totp_secret()
    encrypted = cfg.box.encrypt(secret, _aad(user.id)).decode("ascii")
    if row is None:
        row = UserTwoFactorAuth(user_id=user.id, is_enabled=False)
        session.add(row)
    row.secret_key_encrypted = encrypted
    row.backup_codes = None
    row.last_used_step = None
    await session.flush()
    await record(session, "2fa.setup_started", user_id=user.id, resource_type="user",
                 resource_id=user.id)
    return Enrolment(secret, provisioning_uri(secret, user.email, issuer="Roost"))


def _secret(cfg: IdentityConfig, row: UserTwoFactorAuth) -> str:
    assert row.secret_key_encrypted is not None
    return cfg.box.decrypt_str(row.secret_key_encrypted, _aad(row.user_id))


def _new_codes(row: UserTwoFactorAuth) -> list[str]:
    codes = generate_backup_codes(BACKUP_CODE_COUNT)
    row.backup_codes = [hash_backup_code(c) for c in codes]
    return codes


async def confirm(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, code: str
) -> list[str]:
    user_id = require_user(principal)
    row = await _row(session, user_id)
    if row is None or row.secret_key_encrypted is None:
        raise BadRequest("start enrolment first: POST /api/v1/auth/2fa/setup")
    if row.is_enabled:
        raise Conflict("two-factor authentication is already on")
    step = verify_totp(_secret(cfg, row), code)
    if step is None:
        raise BadRequest("the code does not match; check the authenticator app's clock and "
                         "enter the current code", extra={"field": "code"})
    row.is_enabled = True
    row.last_used_step = step
    row.last_used_at = utcnow()
    codes = _new_codes(row)
    await session.flush()
    await record(session, "2fa.enabled", user_id=user_id, resource_type="user",
                 resource_id=user_id)
    return codes


async def consume_code(
    session: AsyncSession, cfg: IdentityConfig, user_id: uuid.UUID, code: str
) -> str | None:
    """Check a TOTP or backup code for an enabled user and use it up.

    Returns ``"totp"``/``"backup_code"``, or ``None`` (and writes nothing) when wrong.
    A TOTP code is refused once its time step was used; a backup code once it was used.
    """
    row = await _row(session, user_id)
    if row is None or not row.is_enabled or row.secret_key_encrypted is None:
        return None
    cleaned = "".join(code.split())
    # Only six digits can be a TOTP code; a backup code may be all digits too (Crockford
    # base32), typed without its dash, so anything else goes to the backup codes.
    if len(cleaned) == TOTP_DIGITS and cleaned.isascii() and cleaned.isdigit():
        step = verify_totp(_secret(cfg, row), cleaned, last_used_step=row.last_used_step)
        if step is not None:
            row.last_used_step = step
            row.last_used_at = utcnow()
            await session.flush()
            return "totp"
    stored = list(row.backup_codes or [])
    index = match_backup_code(code, stored)
    if index is None:
        return None
    stored[index] = None
    row.backup_codes = stored  # a new list, so the JSONB change is noticed
    row.last_used_at = utcnow()
    await session.flush()
    await record(session, "2fa.backup_code_used", user_id=user_id, resource_type="user",
                 resource_id=user_id, metadata={"remaining": _remaining(row)})
    return "backup_code"


async def _require_code(
    session: AsyncSession, cfg: IdentityConfig, user_id: uuid.UUID, code: str
) -> UserTwoFactorAuth:
    row = await _row(session, user_id)
    if row is None or not row.is_enabled:
        raise BadRequest("two-factor authentication is not on")
    # A stolen session alone must not guess its way to turning the second factor off (or
    # to new backup codes): wrong codes count under the same key as at sign-in, and lock.
    from roost.identity.sessions import ClientInfo, commit_auth_failure  # (imports this)

    mfa_key = throttle.second_factor_key(user_id)
    await throttle.check_not_locked(session, [mfa_key])
    if await consume_code(session, cfg, user_id, code) is None:
        await commit_auth_failure(session, cfg, action="auth.mfa_failed", user_id=user_id,
                                  login=str(user_id), client=ClientInfo(), reason="bad_code",
                                  account_key=mfa_key, account_scope="second_factor")
        raise Forbidden("the code is incorrect or was already used")
    await throttle.clear(session, mfa_key)
    return row


async def disable(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, code: str
) -> None:
    user_id = require_user(principal)
    row = await _require_code(session, cfg, user_id, code)
    await session.delete(row)
    await session.flush()
    await record(session, "2fa.disabled", user_id=user_id, resource_type="user",
                 resource_id=user_id)


async def regenerate_backup_codes(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, code: str
) -> list[str]:
    user_id = require_user(principal)
    row = await _require_code(session, cfg, user_id, code)
    codes = _new_codes(row)
    await session.flush()
    await record(session, "2fa.backup_codes_regenerated", user_id=user_id,
                 resource_type="user", resource_id=user_id)
    return codes


async def admin_reset(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    """For a user who lost their authenticator and backup codes."""
    if not principal.is_admin:
        # One's own account exists: say what is missing (as admin_update does), not 404.
        raise NotFound("no such user") if user_id != principal.user_id else Forbidden(
            "resetting two-factor needs an administrator")
    await load_user(session, user_id)
    row = await _row(session, user_id)
    if row is None:
        raise NotFound("that account has no two-factor authentication")
    await session.delete(row)
    await session.flush()
    await record(session, "2fa.reset_by_admin", user_id=principal.user_id, resource_type="user",
                 resource_id=user_id)
