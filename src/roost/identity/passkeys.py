"""Passkeys (WebAuthn): registration and sign-in ceremonies, list/rename/delete.

Challenges are kept server-side in ``auth_challenges`` (single use, five minutes) and
named by id in the second step, so the ceremony works without cookies.  Sign-in is
username-less (discoverable credentials): the authenticator says which credential it
used, and we look it up.  A passkey with user verification is a complete sign-in; it
does not ask for TOTP on top.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow
from roost.errors import BadRequest, Conflict, Forbidden, Unauthorized, Unprocessable
from roost.identity import throttle
from roost.identity.common import load_user, lock_owner_quota, owned_row, require_user
from roost.identity.config import IdentityConfig
from roost.identity.models import ApiKey, AuthChallenge, PasskeyCredential
from roost.identity.sessions import (
    ClientInfo,
    IssuedTokens,
    check_standing,
    commit_auth_failure,
    count_address_work,
    start_session,
)
from roost.inputs import holds_control, is_blank
from roost.principal import Principal
from roost.security.webauthn_helpers import (
    begin_authentication,
    begin_registration,
    finish_authentication,
    finish_registration,
)

CHALLENGE_TTL = timedelta(minutes=5)
MAX_PASSKEYS_PER_USER = 50


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def user_handle(user_id: uuid.UUID) -> bytes:
    """Stable per user, not the id itself (the authenticator stores and reveals it)."""
    return hashlib.sha256(b"roost-webauthn-user:" + user_id.bytes).digest()


def _name(raw: str | None, default: str) -> str:
    """A passkey's name: one line (shown in lists, the console, the CLI), at most 100
    characters; none given is ``default``."""
    name = (raw or "").strip()
    name = default if is_blank(name) else name  # zero-width characters show nothing too
    if len(name) > 100:
        raise Unprocessable("passkey name must be at most 100 characters", extra={"field": "name"})
    if holds_control(name):
        raise Unprocessable("passkey name must be one line without control characters",
                            extra={"field": "name"})
    return name


async def _take_challenge(
    session: AsyncSession, challenge_id: uuid.UUID, purpose: str, user_id: uuid.UUID | None
) -> AuthChallenge | None:
    """Delete-and-return: a challenge answers exactly one ceremony."""
    stmt = delete(AuthChallenge).where(
        AuthChallenge.id == challenge_id, AuthChallenge.purpose == purpose,
        AuthChallenge.expires_at > func.now(),
    )
    if user_id is not None:
        stmt = stmt.where(AuthChallenge.user_id == user_id)
    row: AuthChallenge | None = (
        await session.scalars(stmt.returning(AuthChallenge))
    ).one_or_none()
    return row


async def _passkeys_below_cap(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """The account's credential ids, or 400 when it holds the most it may."""
    existing = list((await session.scalars(
        select(PasskeyCredential.credential_id).where(PasskeyCredential.user_id == user_id)
    )).all())
    if len(existing) >= MAX_PASSKEYS_PER_USER:
        raise BadRequest(f"an account may hold at most {MAX_PASSKEYS_PER_USER} passkeys")
    return existing


async def _not_with_an_expiring_key(session: AsyncSession, principal: Principal) -> None:
    """A passkey never expires: registered with an API key that does, a leaked short-lived
    key would become lasting access (as a key it made would, were its expiry not capped)."""
    if principal.api_key_id is None:
        return
    expires = await session.scalar(select(ApiKey.expires_at)
                                   .where(ApiKey.id == principal.api_key_id))
    if expires is not None:
        raise Forbidden("a passkey does not expire, and this API key does: register the "
                        "passkey from a signed-in session (or with a key without an expiry)")


async def begin_register(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, name: str | None = None
) -> tuple[uuid.UUID, dict[str, Any]]:
    await _not_with_an_expiring_key(session, principal)
    user = await load_user(session, require_user(principal))
    existing = await _passkeys_below_cap(session, user.id)
    options, challenge = begin_registration(
        cfg.rp, user_handle=user_handle(user.id), user_name=user.username,
        display_name=user.full_name or user.username,
        exclude_credential_ids=[_b64url_decode(c) for c in existing],
    )
    row = AuthChallenge(user_id=user.id, purpose="passkey_register", challenge=challenge,
                        payload={"name": _name(name, "Passkey")},
                        expires_at=utcnow() + CHALLENGE_TTL)
    session.add(row)
    await session.flush()
    return row.id, options


async def finish_register(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, *,
    challenge_id: uuid.UUID, credential: dict[str, Any], name: str | None = None,
) -> PasskeyCredential:
    user_id = require_user(principal)
    await _not_with_an_expiring_key(session, principal)
    challenge = await _take_challenge(session, challenge_id, "passkey_register", user_id)
    if challenge is None or challenge.challenge is None:
        raise BadRequest("this passkey registration has expired or was already finished; "
                         "start again")
    verified = finish_registration(cfg.rp, credential=credential,
                                   expected_challenge=challenge.challenge)
    credential_id = b64url(verified.credential_id)
    taken = await session.scalar(
        select(PasskeyCredential.id).where(PasskeyCredential.credential_id == credential_id)
    )
    if taken is not None:
        raise Conflict("this passkey is already registered")
    # Checked again here, under a lock: ceremonies begun in parallel below the cap must
    # not all finish.
    await lock_owner_quota(session, user_id, "passkeys")
    await _passkeys_below_cap(session, user_id)
    row = PasskeyCredential(
        user_id=user_id, credential_id=credential_id, public_key=verified.public_key,
        sign_count=verified.sign_count, aaguid=verified.aaguid,
        device_type=verified.device_type, backed_up=verified.backed_up,
        credential_name=_name(name, str(challenge.payload.get("name") or "Passkey")),
    )
    session.add(row)
    await session.flush()
    await record(session, "passkey.registered", user_id=user_id, resource_type="passkey",
                 resource_id=row.id, changes={"name": row.credential_name})
    return row


PASSKEY_BEGINS_PER_FAILURE: Final = 10
"""Passkey sign-in begins an address may make per ROOST_LOGIN_MAX_FAILURES_PER_IP."""


async def begin_login(session: AsyncSession, cfg: IdentityConfig) -> tuple[uuid.UUID, dict[str, Any]]:
    # Anyone may begin, and each begin stores a row: limited per address. Successful
    # sign-ins count too, so the allowance is ten times the failures' (an office behind
    # one address signs in often).
    await count_address_work(session, cfg, "passkey_begin", "passkey sign-ins begun",
                             times=PASSKEY_BEGINS_PER_FAILURE)
    options, challenge = begin_authentication(cfg.rp)
    row = AuthChallenge(user_id=None, purpose="passkey_login", challenge=challenge,
                        expires_at=utcnow() + CHALLENGE_TTL)
    session.add(row)
    await session.flush()
    return row.id, options


def _credential_id_of(credential: dict[str, Any]) -> str | None:
    value = credential.get("rawId") or credential.get("id")
    if not isinstance(value, str) or not 1 <= len(value) <= 1400:
        return None
    try:
        return b64url(_b64url_decode(value))  # canonical form, as stored
    except (binascii.Error, ValueError):
        return None


async def finish_login(
    session: AsyncSession, cfg: IdentityConfig, *, challenge_id: uuid.UUID,
    credential: dict[str, Any], client: ClientInfo,
) -> IssuedTokens:
    ip = throttle.ip_key(client.ip)
    if ip:
        await throttle.check_not_locked(session, [ip])

    async def fail(reason: str, user_id: uuid.UUID | None = None) -> Unauthorized:
        await commit_auth_failure(session, cfg, action="auth.passkey_failed", user_id=user_id,
                                  login=f"passkey:{user_id or 'unknown'}", client=client,
                                  reason=reason)
        return Unauthorized("passkey sign-in failed")

    challenge = await _take_challenge(session, challenge_id, "passkey_login", None)
    if challenge is None or challenge.challenge is None:
        raise await fail("expired_challenge")
    cred_id = _credential_id_of(credential)
    stored = await session.scalar(
        select(PasskeyCredential).where(PasskeyCredential.credential_id == cred_id)
    ) if cred_id else None
    if stored is None:
        raise await fail("unknown_credential")
    response = credential.get("response")
    if not isinstance(response, dict):  # the browser's assertion is an object: forged
        raise await fail("bad_assertion", stored.user_id)
    handle = response.get("userHandle")
    if handle is not None:
        try:
            matches = hmac.compare_digest(_b64url_decode(str(handle)), user_handle(stored.user_id))
        except (binascii.Error, ValueError):
            matches = False
        if not matches:
            raise await fail("user_handle_mismatch", stored.user_id)
    try:
        assertion = finish_authentication(
            cfg.rp, credential=credential, expected_challenge=challenge.challenge,
            public_key=stored.public_key, current_sign_count=stored.sign_count,
        )
    except Unauthorized:
        raise await fail("bad_assertion", stored.user_id) from None
    user = await load_user(session, stored.user_id)
    check_standing(user)
    stored.sign_count = assertion.new_sign_count
    stored.backed_up = assertion.backed_up
    stored.last_used_at = utcnow()
    await session.flush()
    return await start_session(session, cfg, user, method="passkey", client=client)


async def list_passkeys(session: AsyncSession, principal: Principal) -> list[PasskeyCredential]:
    owner = require_user(principal)
    return list((await session.scalars(
        select(PasskeyCredential).where(PasskeyCredential.user_id == owner)
        .order_by(PasskeyCredential.created_at)
    )).all())


async def rename_passkey(
    session: AsyncSession, principal: Principal, passkey_id: uuid.UUID, name: str
) -> PasskeyCredential:
    row = await owned_row(session, principal, PasskeyCredential, passkey_id, "passkey")
    before = row.credential_name
    if is_blank(name):  # a rename to nothing is a mistake, not the default name
        raise Unprocessable("passkey name must not be blank", extra={"field": "name"})
    row.credential_name = _name(name, "Passkey")
    await session.flush()
    await record(session, "passkey.renamed", user_id=principal.user_id or row.user_id,
                 resource_type="passkey", resource_id=row.id,
                 changes={"before": before, "after": row.credential_name})
    return row


async def delete_passkey(session: AsyncSession, principal: Principal, passkey_id: uuid.UUID) -> None:
    row = await owned_row(session, principal, PasskeyCredential, passkey_id, "passkey")
    await session.delete(row)
    await session.flush()
    await record(session, "passkey.deleted", user_id=principal.user_id or row.user_id,
                 resource_type="passkey", resource_id=passkey_id,
                 changes={"name": row.credential_name, "owner": str(row.user_id)})
