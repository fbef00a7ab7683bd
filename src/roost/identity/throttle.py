"""Login throttling: temporary lockout after N failures per sign-in name and per address.

Counters live in ``auth_throttle``; the sign-in code commits them before answering
401, so a failed attempt always counts.  The 429 at sign-in is decided by the name as
typed (normalised, :func:`login_key`), whether or not it names an account: an account's
username and e-mail lock separately, exactly like two unknown names, so locking one out
never confirms that the other belongs to it.  A per-account counter
(:func:`account_key`) with a higher limit caps the total of wrong passwords over all of
an account's names.  Wrong
second-factor codes count against the account under a key of their own
(:func:`second_factor_key`) that a correct password does not clear.  Registrations and
passkey sign-in begins count per address whether they succeed or not
(:func:`address_work_key`, ``sessions.count_address_work``).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import utcnow
from roost.errors import TooManyRequests
from roost.identity.common import normalize_login
from roost.identity.models import AuthThrottle


def login_key(login: str) -> str:
    """The counter of one sign-in name, known or not (a hash: unknown names are not kept)."""
    return "login:" + hashlib.sha256(normalize_login(login).encode()).hexdigest()[:40]


def account_key(user_id: uuid.UUID) -> str:
    """Every wrong password of one account, whichever of its names was typed."""
    return f"user:{user_id}"


def ip_key(ip: str | None) -> str | None:
    return f"ip:{ip}" if ip else None


def second_factor_key(user_id: uuid.UUID) -> str:
    """Wrong TOTP/backup codes of one account.  Kept apart from the password counters,
    which a correct password clears: only a correct second factor (or the end of the window or
    lockout) clears this one, so knowing the password does not buy unlimited guesses."""
    return f"mfa:{user_id}"


@dataclass(frozen=True)
class Limits:
    per_account: int  # per sign-in name (login_key) and per second factor
    per_ip: int
    window_s: int
    lockout_s: int
    per_user: int  # all of an account's names together (account_key)


def address_work_key(kind: str, ip: str | None) -> str | None:
    """Attempts from one address at work anyone may ask for, failed or not (``kind``:
    ``register``, ``passkey_begin``): each costs a hash or stores a row."""
    return f"{kind}:ip:{ip}" if ip else None


async def serialize(session: AsyncSession, keys: list[str]) -> None:
    """Attempts on the same counters one at a time, until the transaction ends (the
    sign-in code commits a failure before answering): checked, verified and counted
    together, so attempts sent at once cannot all pass the lockout check before any
    failure is counted (seven wrong passwords at once were all verified past a limit of
    three).  Sorted, so two attempts sharing keys never wait for each other in a cycle."""
    for key in sorted(set(keys)):
        await session.execute(text("SELECT pg_advisory_xact_lock(7263118, hashtext(:key))"),
                              {"key": key})


async def check_not_locked(session: AsyncSession, keys: list[str],
                           what: str = "failed sign-in attempts") -> None:
    """429 with Retry-After while any of ``keys`` is locked out."""
    until = await session.scalar(
        select(func.max(AuthThrottle.locked_until)).where(
            AuthThrottle.key.in_(keys), AuthThrottle.locked_until > func.now()
        )
    )
    if until is not None:
        seconds = max(1, math.ceil((until - utcnow()).total_seconds()))
        raise TooManyRequests(
            f"too many {what}; try again in {math.ceil(seconds / 60)} minute(s)",
            extra={"retry_after_s": seconds},
        )


async def record_failure(session: AsyncSession, key: str, limit: int, limits: Limits) -> bool:
    """Count one failure for ``key``; True when this failure starts a lockout."""
    now = utcnow()
    await session.execute(
        pg_insert(AuthThrottle)
        .values(key=key, failures=0, window_started_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    row = await session.scalar(
        select(AuthThrottle).where(AuthThrottle.key == key).with_for_update()
    )
    assert row is not None
    window_over = row.window_started_at < now - timedelta(seconds=limits.window_s)
    lock_over = row.locked_until is not None and row.locked_until <= now
    if window_over or lock_over:  # a fresh window after the old one (or the lockout) ended
        row.failures, row.window_started_at, row.locked_until = 0, now, None
    row.failures += 1
    newly_locked = row.failures >= limit and row.locked_until is None
    if newly_locked:
        row.locked_until = now + timedelta(seconds=limits.lockout_s)
    await session.flush()
    return newly_locked


async def clear(session: AsyncSession, key: str) -> None:
    await session.execute(delete(AuthThrottle).where(AuthThrottle.key == key))


async def prune(session: AsyncSession, window_s: int) -> int:
    """Forget counters whose window and lockout are over."""
    cutoff = utcnow() - timedelta(seconds=window_s)
    result = await session.execute(
        delete(AuthThrottle).where(
            AuthThrottle.window_started_at < cutoff,
            or_(AuthThrottle.locked_until.is_(None), AuthThrottle.locked_until < func.now()),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
