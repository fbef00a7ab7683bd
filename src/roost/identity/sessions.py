"""Sign-in, sessions and tokens.

A login creates a ``sessions`` row holding the SHA-256 of an opaque refresh token and
returns a short-lived JWT access token naming the row (``sid``).  The resolver checks
the row on every request, so logout, logout-everywhere, device revocation, suspension
and admin revocation take effect on the very next request.  Refresh tokens rotate on
every use; presenting a replaced one again revokes the session (it was copied).

Failures are recorded and committed before the error is raised (the request's
transaction would roll back with it), so counters and audit records of failed attempts
survive.  Unknown names and
wrong passwords get the same answer after the same amount of argon2 work.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.analytics.outbox import emit as emit_event
from roost.audit.service import record
from roost.context import current_context
from roost.db.base import utcnow, uuid7
from roost.errors import BadRequest, Conflict, Forbidden, Unauthorized
from roost.identity import apikeys, ratelimits, throttle, twofactor
from roost.identity.accounts import end_sign_ins, find_user
from roost.identity.common import (
    MAX_LISTED,
    existing_target_user_id,
    load_user,
    owned_row,
    require_user,
)
from roost.identity.config import IdentityConfig
from roost.identity.devices import record_login_device
from roost.identity.models import AuthChallenge, Session, User, UserTwoFactorAuth
from roost.principal import Principal
from roost.security.passwords import (
    PasswordCheck,
    check_password,
    check_password_policy,
    dummy_verify,
    hash_password,
    needs_rehash,
    password_too_long,
)
from roost.security.tokens import (
    generate_refresh_token,
    hash_refresh_token,
    hash_token,
    issue_access_token,
    issue_refresh_token,
    refresh_token_session,
)

MFA_CHALLENGE_TTL = timedelta(minutes=5)
MFA_MAX_ATTEMPTS = 5
BAD_CREDENTIALS = "incorrect username/email or password"
# Revoked rows are kept this long so "your sessions" can still show a recent logout.
REVOKED_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None = None
    user_agent: str | None = None
    device_name: str | None = None
    device_type: str | None = None


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_at: datetime
    session_id: uuid.UUID
    user: User


@dataclass(frozen=True)
class MfaRequired:
    mfa_token: str
    expires_in: int
    methods: list[str] = field(default_factory=lambda: ["totp", "backup_code"])


# An account has two sign-in names (username and e-mail), each locking on its own; the
# account's total may reach this many times the per-name limit before it locks too.
_USER_LIMIT_FACTOR = 2


def _limits(cfg: IdentityConfig) -> throttle.Limits:
    return throttle.Limits(cfg.max_failures_per_account, cfg.max_failures_per_ip,
                           cfg.failure_window_s, cfg.lockout_s,
                           per_user=cfg.max_failures_per_account * _USER_LIMIT_FACTOR)


async def _check(stored: str | None, password: str) -> PasswordCheck:
    """argon2/bcrypt off the event loop; a dummy hash when there is nothing to compare."""
    if stored is None:
        await asyncio.to_thread(dummy_verify, password)
        return PasswordCheck(False)
    return await asyncio.to_thread(check_password, stored, password)


async def _verify(stored: str | None, password: str) -> bool:
    return (await _check(stored, password)).ok


async def commit_auth_failure(
    session: AsyncSession,
    cfg: IdentityConfig,
    *,
    action: str,
    user_id: uuid.UUID | None,
    login: str,
    client: ClientInfo,
    reason: str,
    count: bool = True,
    account_key: str | None = None,
    account_scope: str = "account",
    name_counted: bool = True,
) -> None:
    """Audit a failed attempt, count it per account and per address, and COMMIT.

    The caller raises right after: the request's transaction would roll back with the
    error, and the counters and audit records must survive.  Committing here (rather than
    writing through a second connection) holds one pooled connection per request, so a
    flood of failed logins cannot starve the pool.  Call it only before the transaction
    has written anything that must not be kept.  A failure counts against the name
    ``login`` and, when it names one, the account (``throttle``'s docstring); ``account_key``
    replaces both (second-factor failures count under their own key, reported as
    ``account_scope`` in the lockout record); ``name_counted=False`` leaves the name's
    counter out (a signed-in request typed no name: a stranger's guesses at the sign-in
    form must not lock its owner out of it, nor its failures lock the form).
    """
    limits = _limits(cfg)
    locked: list[str] = []
    if count:
        counters = [(account_key, limits.per_account, account_scope)] if account_key else [
            (throttle.login_key(login), limits.per_account, "account")] if name_counted else []
        if account_key is None and user_id is not None:
            counters.append((throttle.account_key(user_id), limits.per_user, "account_total"))
        for key, limit, scope in counters:
            if await throttle.record_failure(session, key, limit, limits):
                locked.append(scope)
        ip = throttle.ip_key(client.ip)
        if ip and await throttle.record_failure(session, ip, limits.per_ip, limits):
            locked.append("ip")
    meta = {"login": login.strip().lower()[:255], "reason": reason}
    await record(session, action, user_id=user_id, category="access", success=False,
                 resource_type="user", resource_id=user_id, metadata=meta,
                 error_message=reason)
    for scope in locked:
        await record(session, "auth.lockout", user_id=user_id, category="access",
                     resource_type="user", resource_id=user_id,
                     metadata={"scope": scope, "login": meta["login"],
                               "lockout_s": limits.lockout_s})
    await session.commit()


async def count_address_work(session: AsyncSession, cfg: IdentityConfig, kind: str,
                             what: str, *, times: int = 1) -> None:
    """One more ``kind`` of work from the request's address that anyone may ask for
    (a registration's argon2 hash and account, a passkey sign-in's challenge row): 429
    with Retry-After once the address made ``times`` x ``ROOST_LOGIN_MAX_FAILURES_PER_IP``
    of them in the window, for the lockout time, as sign-in failures are limited.  Counted in the
    request's transaction: what then fails cheaply (a taken name, a weak password) is
    not counted, and the counter's row lock keeps one address's attempts in turn."""
    key = throttle.address_work_key(kind, current_context().ip_address)
    if key is None:
        return
    limits = _limits(cfg)
    await throttle.check_not_locked(session, [key], what)
    if await throttle.record_failure(session, key, limits.per_ip * times, limits):
        await record(session, "auth.lockout", category="access",
                     metadata={"scope": f"{kind}_ip", "lockout_s": limits.lockout_s})


def check_standing(user: User) -> None:
    if user.status == "pending_approval":
        raise Forbidden("this account is awaiting approval by an administrator")
    if user.status != "active" or not user.is_active:
        raise Forbidden("this account is suspended; contact an administrator")


async def lock_for_sign_in(session: AsyncSession, user: User) -> None:
    """Lock the account's row until the sign-in commits, and read ``user`` afresh.

    A password change or a suspension writes this row before it ends the account's
    sign-ins (``accounts.end_sign_ins``).  A sign-in whose checks ran meanwhile either
    waits here for it to commit and then sees the new password or status, or holds it up
    until its own session is committed, which the ending then finds.  Taken after the slow
    password check, never around it: that would serialise an account's sign-ins.
    FOR NO KEY UPDATE, as the sign-in writes the row itself (``last_login_at``)."""
    fresh = await session.scalar(
        select(User).where(User.id == user.id).with_for_update(key_share=True)
        .execution_options(populate_existing=True))
    if fresh is None:  # deleted meanwhile
        raise Unauthorized(BAD_CREDENTIALS)


async def start_session(
    session: AsyncSession, cfg: IdentityConfig, user: User, *, method: str, client: ClientInfo,
) -> IssuedTokens:
    """A new session for ``user``, whose standing is checked again under the row's lock
    (:func:`lock_for_sign_in`): no session outlives a suspension that ran alongside."""
    await lock_for_sign_in(session, user)
    check_standing(user)
    device_id = await record_login_device(
        session, user.id, user_agent=client.user_agent, ip=client.ip,
        device_name=client.device_name, device_type=client.device_type,
    )
    session_id = uuid7()
    refresh = issue_refresh_token(cfg.jwt_secret, session_id)
    expires_at = utcnow() + timedelta(seconds=cfg.refresh_ttl_s)
    row = Session(
        id=session_id, user_id=user.id, token_hash=hash_refresh_token(refresh), expires_at=expires_at,
        auth_method=method, device_id=device_id, ip_address=client.ip,
        user_agent=client.user_agent[:1000] if client.user_agent else None,
        last_used_at=utcnow(),
    )
    session.add(row)
    user.last_login_at = utcnow()
    await session.flush()
    access = issue_access_token(cfg.jwt_secret, user_id=user.id, session_id=row.id,
                                ttl_seconds=cfg.access_ttl_s)
    await record(session, "auth.login", user_id=user.id, category="access",
                 resource_type="session", resource_id=row.id,
                 metadata={"method": method, "device_id": str(device_id)})
    return IssuedTokens(access, refresh, cfg.access_ttl_s, expires_at, row.id, user)


async def login(
    session: AsyncSession, cfg: IdentityConfig, *, login: str, password: str, client: ClientInfo,
) -> IssuedTokens | MfaRequired:
    """Password sign-in: tokens, or an MFA challenge when TOTP is enabled."""
    user = await find_user(session, login) if len(login) <= 255 else None
    # The name's counter decides, known or not; the account's total only once it is
    # over the higher limit (throttle's docstring).
    name_key = throttle.login_key(login[:255])
    keys = [name_key] + ([k] if (k := throttle.ip_key(client.ip)) else [])
    if user is not None:
        keys.append(throttle.account_key(user.id))
    await throttle.serialize(session, [name_key, *([throttle.account_key(user.id)] if user else [])])
    await throttle.check_not_locked(session, keys)
    checked = user.hashed_password if user else None
    if password_too_long(password):
        check = PasswordCheck(False)
        await asyncio.to_thread(dummy_verify)
    else:
        check = await _check(checked, password)
    if check.ok and user is not None:
        # A password change that committed during the check ended the sessions this one
        # would join: the old password is a wrong one now.  The lock also covers the
        # second-factor challenge below, which the change deletes likewise.
        await lock_for_sign_in(session, user)
        if user.hashed_password != checked:
            check = PasswordCheck(False)
    if not check.ok or user is None:
        # Analytics (docs/analytics.md): method and outcome only, never what was typed.
        emit_event(session, "auth.login", {"method": "password", "success": False},
                   user_id=user.id if user else None)
        await commit_auth_failure(session, cfg, action="auth.login_failed",
                                  user_id=user.id if user else None, login=login, client=client,
                                  reason="unknown_user" if user is None else "bad_password")
        raise Unauthorized(BAD_CREDENTIALS)
    try:
        check_standing(user)
    except Forbidden:
        emit_event(session, "auth.login", {"method": "password", "success": False},
                   user_id=user.id)
        await commit_auth_failure(session, cfg, action="auth.login_failed", user_id=user.id,
                                  login=login, client=client, reason=f"status_{user.status}",
                                  count=False)
        raise
    assert user.hashed_password is not None
    if check.rehash or needs_rehash(user.hashed_password):
        # Imported bcrypt (or weaker argon2) hashes become argon2id, and hashes of a password
        # as typed become hashes of its normalised form, while we hold the password.
        user.hashed_password = await asyncio.to_thread(hash_password, password)
        await record(session, "user.password_rehashed", user_id=user.id, category="system",
                     resource_type="user", resource_id=user.id)
    await throttle.clear(session, name_key)
    await throttle.clear(session, throttle.account_key(user.id))
    tfa = await session.scalar(
        select(UserTwoFactorAuth).where(UserTwoFactorAuth.user_id == user.id)
    )
    if tfa is not None and tfa.is_enabled:
        token = generate_refresh_token()
        session.add(AuthChallenge(
            user_id=user.id, purpose="mfa_login", token_hash=hash_token(token),
            expires_at=utcnow() + MFA_CHALLENGE_TTL,
            payload={"device_name": client.device_name, "device_type": client.device_type},
        ))
        await session.flush()
        await record(session, "auth.mfa_challenge", user_id=user.id, category="access",
                     resource_type="user", resource_id=user.id)
        return MfaRequired(token, int(MFA_CHALLENGE_TTL.total_seconds()))
    issued = await start_session(session, cfg, user, method="password", client=client)
    emit_event(session, "auth.login", {"method": "password", "success": True},
               user_id=user.id, session_id=issued.session_id)
    return issued


async def complete_mfa(
    session: AsyncSession, cfg: IdentityConfig, *, mfa_token: str, code: str, client: ClientInfo,
) -> IssuedTokens:
    """Second step: a TOTP code or a backup code for the challenge from :func:`login`."""
    challenge = await session.scalar(
        select(AuthChallenge).where(
            AuthChallenge.token_hash == hash_token(mfa_token),
            AuthChallenge.purpose == "mfa_login",
            AuthChallenge.expires_at > func.now(),
        )
    )
    if challenge is None or challenge.user_id is None:
        raise Unauthorized("this sign-in step has expired or was already used; sign in again")
    user = await load_user(session, challenge.user_id)
    # The password counter is cleared by every correct password; wrong codes count under
    # their own key, which only a correct code clears (or the window/lockout ending).
    mfa_key = throttle.second_factor_key(user.id)
    keys = [throttle.account_key(user.id), mfa_key]
    if ip := throttle.ip_key(client.ip):
        keys.append(ip)
    await throttle.serialize(session, [mfa_key])
    await throttle.check_not_locked(session, keys)
    method = await twofactor.consume_code(session, cfg, user.id, code)
    if method is None:
        bump = await session.execute(
            update(AuthChallenge).where(AuthChallenge.id == challenge.id)
            .values(attempts=AuthChallenge.attempts + 1).returning(AuthChallenge.attempts)
        )
        attempts = bump.scalar_one_or_none() or MFA_MAX_ATTEMPTS
        if attempts >= MFA_MAX_ATTEMPTS:  # guessing: make them start over
            await session.execute(delete(AuthChallenge).where(AuthChallenge.id == challenge.id))
        # Before the commit below, as login() does: the sign-in failed at its second step.
        emit_event(session, "auth.login",
                   {"method": "password", "second_factor": None, "success": False},
                   user_id=user.id)
        await commit_auth_failure(session, cfg, action="auth.mfa_failed", user_id=user.id,
                                  login=user.username, client=client, reason="bad_code",
                                  account_key=mfa_key, account_scope="second_factor")
        raise Unauthorized("incorrect authentication code")
    # Before the challenge's row: a password change or suspension ending the sign-ins locks
    # the account's row first, then deletes the challenge; waiting for it, this finds none.
    await lock_for_sign_in(session, user)
    # Single use: only the request that deletes the challenge goes on.
    gone = await session.execute(
        delete(AuthChallenge).where(AuthChallenge.id == challenge.id).returning(AuthChallenge.id)
    )
    if gone.scalar_one_or_none() is None:
        raise Unauthorized("this sign-in step has expired or was already used; sign in again")
    await throttle.clear(session, mfa_key)
    check_standing(user)
    payload: dict[str, Any] = challenge.payload or {}
    client = ClientInfo(client.ip, client.user_agent,
                        client.device_name or payload.get("device_name"),
                        client.device_type or payload.get("device_type"))
    issued = await start_session(session, cfg, user, method=method, client=client)
    # The sign-in is complete only now (login() writes no event for the password step).
    emit_event(session, "auth.login",
               {"method": "password", "second_factor": method, "success": True},
               user_id=user.id, session_id=issued.session_id)
    return issued


async def refresh(
    session: AsyncSession, cfg: IdentityConfig, *, refresh_token: str, client: ClientInfo,
) -> IssuedTokens:
    """Rotate the refresh token and issue a new access token (same session, same expiry)."""
    digest = hash_refresh_token(refresh_token)
    row = await session.scalar(
        select(Session).where(Session.token_hash == digest).with_for_update()
    )
    if row is None:
        # A token Roost issued for a session (its MAC says so) that is no longer the
        # session's current one was replaced by a refresh, however long ago; a token from
        # before that format is recognised only while it is the last one replaced.
        issued_for = refresh_token_session(cfg.jwt_secret, refresh_token)
        reused = await session.scalar(
            select(Session.id).where(
                Session.id == issued_for if issued_for is not None
                else Session.previous_token_hash == digest,
                Session.revoked_at.is_(None))
        )
        if reused is not None:
            # The old token was used after it had been replaced: one of the two holders is
            # not the user.  End the session for both (committed: the 401 rolls back).
            await session.execute(update(Session).where(Session.id == reused)
                                  .values(revoked_at=func.now()))
            await record(session, "session.refresh_reuse", category="access", success=False,
                         resource_type="session", resource_id=reused,
                         error_message="replaced refresh token presented again")
            await session.commit()
        raise Unauthorized("refresh token is invalid or has been used; sign in again")
    if row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("session has ended: sign in again")
    user = await load_user(session, row.user_id)
    if user.status != "active" or not user.is_active:
        raise Unauthorized("session has ended: sign in again")
    new_refresh = issue_refresh_token(cfg.jwt_secret, row.id)
    row.previous_token_hash, row.token_hash = row.token_hash, hash_refresh_token(new_refresh)
    row.last_used_at = utcnow()
    if client.ip:
        row.ip_address = client.ip
    await session.flush()
    access = issue_access_token(cfg.jwt_secret, user_id=user.id, session_id=row.id,
                                ttl_seconds=cfg.access_ttl_s)
    await record(session, "session.refreshed", user_id=user.id, category="access",
                 resource_type="session", resource_id=row.id)
    return IssuedTokens(access, new_refresh, cfg.access_ttl_s, row.expires_at, row.id, user)


async def logout(session: AsyncSession, principal: Principal) -> None:
    if principal.session_id is None:
        raise BadRequest("logout ends a sign-in session; API keys are revoked with "
                         "DELETE /api/v1/api-keys/{id}")
    await session.execute(update(Session).where(Session.id == principal.session_id)
                          .values(revoked_at=func.now()))
    await record(session, "auth.logout", user_id=principal.user_id, category="access",
                 resource_type="session", resource_id=principal.session_id)


async def revoke_all_sessions(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None,
    *, except_current: bool = False,
) -> int:
    """Logout everywhere (own sessions) or admin revocation (anyone's)."""
    owner = await existing_target_user_id(session, principal, user_id)
    count = await end_sign_ins(session, owner,
                               keep=principal.session_id if except_current else None)
    action = "auth.logout_all" if owner == principal.user_id else "session.revoked_by_admin"
    await record(session, action, user_id=principal.user_id, category="access",
                 resource_type="user", resource_id=owner, metadata={"sessions": count})
    return count


async def list_sessions(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None
) -> list[Session]:
    owner = await existing_target_user_id(session, principal, user_id)
    return list((await session.scalars(
        select(Session).where(Session.user_id == owner, Session.revoked_at.is_(None),
                              Session.expires_at > func.now())
        .order_by(Session.created_at.desc(), Session.id.desc()).limit(MAX_LISTED)
    )).all())


async def revoke_session(
    session: AsyncSession, principal: Principal, session_id: uuid.UUID
) -> None:
    row = await owned_row(session, principal, Session, session_id, "session")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
        await record(session, "session.revoked", user_id=principal.user_id, category="access",
                     resource_type="session", resource_id=row.id,
                     metadata={"owner": str(row.user_id)})


async def change_password(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, *,
    current_password: str, new_password: str, client: ClientInfo,
) -> int:
    """Needs the current password; ends every other session.  Returns how many."""
    user = await load_user(session, require_user(principal))
    if user.hashed_password is None:
        # Nothing to be wrong about: no "incorrect" answer, and no failure counted.
        raise Conflict("this account has no password (it signs in with API keys or "
                       "passkeys): there is none to change")
    # The account's own counter only: the name's is the sign-in form's, where anyone may
    # type the name wrongly until it locks; the owner, signed in, could then not change a
    # password they fear leaked.
    keys = [throttle.account_key(user.id)]
    await throttle.serialize(session, keys)  # guesses sent at once, counted in turn
    await throttle.check_not_locked(session, keys)
    # Read again now that changes of this account run one at a time: a change that ran
    # alongside (from another session) set another hash and ended this session; checking
    # the hash read before would let both "succeed", the first one's password lost.
    await lock_for_sign_in(session, user)
    if principal.session_id is not None and not await session.scalar(
            select(Session.id).where(Session.id == principal.session_id,
                                     Session.revoked_at.is_(None))):
        raise Unauthorized("this session has ended (the password was changed meanwhile?): "
                           "sign in again")
    if user.hashed_password is None:
        raise Conflict("this account has no password: there is none to change")
    if not await _verify(user.hashed_password, current_password):
        await commit_auth_failure(session, cfg, action="user.password_change_failed",
                                  user_id=user.id, login=user.username, client=client,
                                  reason="bad_password", name_counted=False)
        raise Forbidden("current password is incorrect")
    check_password_policy(new_password, username=user.username, email=user.email)
    user.hashed_password = await asyncio.to_thread(hash_password, new_password)
    # The row written (and so locked) before the sessions are ended: a sign-in with the old
    # password then either sees the new hash or has its session ended here
    # (lock_for_sign_in).
    await session.flush()
    # Also ends sign-ins half done with the old password (a second-factor step pending).
    ended = await end_sign_ins(session, user.id, keep=principal.session_id)
    await record(session, "user.password_changed", user_id=user.id, resource_type="user",
                 resource_id=user.id, metadata={"other_sessions_ended": ended})
    return ended


@dataclass(frozen=True)
class CleanupReport:
    sessions: int
    challenges: int
    throttle_rows: int
    rate_limit_rows: int = 0  # idle rate-limit counters and expired stream leases
    api_keys: int = 0  # keys revoked or expired over apikeys.ENDED_KEY_RETENTION ago


async def cleanup_expired(session: AsyncSession, *, failure_window_s: int = 900) -> CleanupReport:
    """Delete expired sessions (and revoked ones after a day), expired sign-in challenges,
    finished throttle counters and API keys ended 30 days ago.  Run periodically (task
    queue or CLI)."""
    cutoff = utcnow() - REVOKED_RETENTION
    sessions = await session.execute(
        delete(Session).where(or_(Session.expires_at < func.now(), Session.revoked_at < cutoff))
    )
    challenges = await session.execute(
        delete(AuthChallenge).where(AuthChallenge.expires_at < func.now())
    )
    pruned = await throttle.prune(session, failure_window_s)
    report = CleanupReport(int(sessions.rowcount), int(challenges.rowcount), pruned,  # type: ignore[attr-defined]
                           await ratelimits.prune(session), await apikeys.purge_ended(session))
    if report.sessions or report.challenges or report.api_keys:
        await record(session, "identity.cleanup", category="system",
                     changes={"sessions": report.sessions, "challenges": report.challenges,
                              "throttle_rows": report.throttle_rows,
                              "api_keys": report.api_keys})
    return report
