"""Accounts: registration, admin creation, approval, roles, suspension.

Status flow: ``pending_approval -> active -> suspended`` (and back to active).
The first account ever created is the root: ``is_root``, ``is_superuser``, role
``admin``, active.  Later self-registrations start ``pending_approval`` unless
``open_registration`` is on; accounts an administrator creates start active.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.errors import retrying_deadlocks
from roost.db.lookup import one_or_404
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.common import (
    is_admin_user,
    load_user,
    lock_sign_ins,
    normalize_email,
    normalize_login,
    normalize_username,
)
from roost.identity.groups import hand_over_groups_of
from roost.identity.models import ROLES, STATUSES, TIERS, AuthChallenge, Session, User
from roost.principal import Principal
from roost.security.passwords import check_password_policy, hash_password

# Serialises "is this the first account?" so two simultaneous first registrations
# cannot both become root (the partial unique index would also refuse the second).
_FIRST_USER_LOCK = text("SELECT pg_advisory_xact_lock(7263117, 200)")
MAX_FULL_NAME_LENGTH = 255  # users.full_name


def check_full_name(full_name: str | None) -> None:
    """422 for what the column cannot hold: every caller (the API's schema, the CLI, imports,
    a profile edit) gets the same clear answer instead of the database's error."""
    if full_name is None:
        return
    if len(full_name) > MAX_FULL_NAME_LENGTH:
        raise Unprocessable(f"full name must be at most {MAX_FULL_NAME_LENGTH} characters",
                            extra={"field": "full_name"})
    if "\x00" in full_name:
        raise Unprocessable("full name must not contain NUL characters",
                            extra={"field": "full_name"})


async def _check_unique(session: AsyncSession, username: str, email: str) -> None:
    taken = (
        await session.execute(
            select(User.username, User.email).where(
                or_(User.username == username, User.email == email)
            )
        )
    ).all()
    for row in taken:
        if row.username == username:
            raise Conflict("that username is already taken", extra={"field": "username"})
        raise Conflict("an account with that email already exists", extra={"field": "email"})


async def create_user(
    session: AsyncSession,
    actor: Principal | None,
    *,
    username: str,
    email: str,
    password: str | None,
    full_name: str | None = None,
    role: str = "user",
    tier: str = "free",
    status: str | None = None,
    open_registration: bool = False,
    first_becomes_root: bool = True,
) -> User:
    """Create an account.  ``actor`` is an administrator (admin creation) or ``None``
    (self-registration).  Raises 422 for weak passwords or bad names, 409 for taken ones.

    ``first_becomes_root=False`` (test fixtures) keeps the first account ordinary."""
    username = normalize_username(username)
    email = normalize_email(email)
    admin_created = actor is not None and actor.is_admin
    if actor is not None and not actor.is_admin:
        raise Forbidden("only an administrator can create accounts for others")
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    if tier not in TIERS:
        raise BadRequest(f"tier must be one of {', '.join(TIERS)}")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    if (role != "user" or tier != "free" or status is not None) and not admin_created:
        raise Forbidden("only an administrator can choose a role, tier or status")
    check_full_name(full_name)
    hashed = None
    if password is not None:
        check_password_policy(password, username=username, email=email)
        # A taken name is refused before the hash: repeating it costs no argon2 work.
        await _check_unique(session, username, email)
        # Before the lock, off the event loop: hashing takes ~50 ms.
        hashed = await asyncio.to_thread(hash_password, password)

    await session.execute(_FIRST_USER_LOCK)
    await _check_unique(session, username, email)
    first = first_becomes_root and not (await session.scalar(select(exists().select_from(User))))
    user = User(
        username=username, email=email, hashed_password=hashed, full_name=full_name,
        role=role, tier=tier,
    )
    if first:
        user.is_root = user.is_superuser = True
        user.role = "admin"
        user.status = "active"
    elif status is not None:
        user.status = status
    elif admin_created or open_registration:
        user.status = "active"
    else:
        user.status = "pending_approval"
    session.add(user)
    await session.flush()
    await record(
        session, "user.created" if admin_created else "user.registered",
        user_id=actor.user_id if actor is not None and actor.user_id else user.id,
        resource_type="user", resource_id=user.id,
        changes={"username": username, "role": user.role, "status": user.status,
                 "is_root": user.is_root, "tier": user.tier},
    )
    return user


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    if user_id != principal.user_id and not principal.is_admin:
        raise NotFound("no such user")
    return await load_user(session, user_id)


async def list_users(
    session: AsyncSession, principal: Principal, *, status: str | None = None,
    limit: int = 50, after: uuid.UUID | None = None,
) -> list[User]:
    if not principal.is_admin:
        raise Forbidden("listing accounts needs an administrator")
    stmt = select(User).order_by(User.id).limit(limit)
    if status is not None:
        stmt = stmt.where(User.status == status)
    if after is not None:
        stmt = stmt.where(User.id > after)
    return list((await session.scalars(stmt)).all())


async def find_user(session: AsyncSession, login: str) -> User | None:
    """By username or email (case-insensitive; Unicode spellings normalised as
    registration stores them, :func:`normalize_login`)."""
    value = normalize_login(login)
    plain = login.strip().lower()  # addresses stored before normalisation (imports)
    return await session.scalar(
        select(User).where(or_(User.username == value, User.email.in_((value, plain))))
    )


async def end_sign_ins(
    session: AsyncSession, user_id: uuid.UUID, *, keep: uuid.UUID | None = None
) -> int:
    """Revoke the account's sign-in sessions (all but ``keep``) and its unfinished
    second-factor sign-ins; returns how many sessions ended.

    A challenge is a session in waiting: one won with the password before a password
    change, logout everywhere, revocation or suspension must not turn into a session after
    it.  Passkey challenges need no ending: sign-in ones name no account (the credential
    does), and registering one needs a session that is still valid when it finishes.
    """
    await lock_sign_ins(session, user_id)
    stmt = update(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if keep is not None:
        stmt = stmt.where(Session.id != keep)
    ended = await session.execute(stmt.values(revoked_at=func.now()))
    await session.execute(delete(AuthChallenge).where(
        AuthChallenge.user_id == user_id, AuthChallenge.purpose == "mfa_login"))
    return int(ended.rowcount)  # type: ignore[attr-defined]


async def _locked_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The account's row, locked and read afresh: an administrator's change checks the
    status it changes from as committed (an approval behind a suspension found the
    account still pending in its own snapshot and made it active; two approvals at once
    both recorded one).  FOR NO KEY UPDATE: a row that names the account needs only KEY
    SHARE on it, so a membership added meanwhile does not wait for the change."""
    return await one_or_404(
        session, select(User).where(User.id == user_id)
        .with_for_update(key_share=True).execution_options(populate_existing=True),
        missing="no such user")


async def admin_update(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, changes: dict[str, Any],
) -> User:
    """Role, status, tier and flags: administrators only, and never on the root account
    by anyone but the root (it cannot be demoted or suspended at all)."""
    if not principal.is_admin:
        raise NotFound("no such user") if user_id != principal.user_id else Forbidden(
            "changing role, status or tier needs an administrator"
        )
    user = await _locked_user(session, user_id)
    allowed = {"role", "status", "tier", "is_verified", "is_active", "is_superuser"}
    unknown = set(changes) - allowed
    if unknown:
        raise BadRequest(f"cannot change {', '.join(sorted(unknown))} here")
    if user.is_root and any(
        changes.get(k) is not None and changes[k] != getattr(user, k)
        for k in ("role", "status", "is_active", "is_superuser")
    ):
        raise Forbidden("the root account cannot be demoted, suspended or deactivated")
    for field, enum in (("role", ROLES), ("status", STATUSES), ("tier", TIERS)):
        value = changes.get(field)
        if value is not None and value not in enum:
            raise BadRequest(f"{field} must be one of {', '.join(enum)}")
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for field, value in changes.items():
        if value is None or getattr(user, field) == value:
            continue
        before[field] = getattr(user, field)
        after[field] = value
        setattr(user, field, value)
    if not after:
        return user
    # Flushed (the row written, so locked) before the sessions are ended: a sign-in running
    # alongside then either sees the new status or has its session ended below
    # (sessions.lock_for_sign_in).
    await session.flush()
    # Losing access takes effect on the next request: end every login session (API keys
    # are refused by the resolver while the account is not active).
    if after.get("status") in ("suspended", "pending_approval") or after.get("is_active") is False:
        await end_sign_ins(session, user.id)
    action = "user.approved" if (
        before.get("status") == "pending_approval" and after.get("status") == "active"
    ) else "user.role_changed" if "role" in after or "is_superuser" in after else "user.updated"
    await record(
        session, action, user_id=principal.user_id, resource_type="user", resource_id=user.id,
        changes={"before": before, "after": after},
    )
    return user


async def approve(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    """``pending_approval -> active``; approving an active account again changes nothing.
    A suspended account is 409: lifting a suspension is a deliberate status change
    (``PATCH /users/{id} {"status": "active"}``), not an approval."""
    if not principal.is_admin:
        raise Forbidden("approving accounts needs an administrator")
    user = await _locked_user(session, user_id)
    if user.status == "active":
        return user
    if user.status != "pending_approval":
        raise Conflict(f"the account is {user.status}, not awaiting approval")
    return await admin_update(session, principal, user_id, {"status": "active"})


async def delete_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    if not principal.is_admin:
        raise NotFound("no such user") if user_id != principal.user_id else Forbidden(
            "deleting an account needs an administrator"
        )
    # A job of the account's writing at the same moment (a call it stores, a task it
    # finishes) can close a lock cycle with the deletion's many rows: the database ends one
    # side, and when it is this one the deletion is done again (was a 503 to the admin).
    await retrying_deadlocks(session, lambda: _delete_user(session, principal, user_id))


async def _delete_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    # The account's row locked first: a second deletion at once waits for this one, then
    # finds no row (404, one record).  FOR NO KEY UPDATE: a row that names the account
    # (a membership added under a group's lock, which this deletion may wait for below)
    # needs only KEY SHARE on it, so the two cannot wait for each other.
    user = await _locked_user(session, user_id)
    if user.is_root:
        raise Forbidden("the root account cannot be deleted")
    # A group whose last admin this is gets its longest-standing member as admin; a
    # persona they created, its longest-standing other owner.
    await hand_over_groups_of(session, principal, user_id)
    await _hand_over_personas_of(session, principal, user_id)
    await session.delete(user)
    await session.flush()
    await record(
        session, "user.deleted", user_id=principal.user_id, resource_type="user",
        resource_id=user_id, changes={"username": user.username},
    )


# Personas belong to a higher domain (agents, migration 0600), which this one must not
# import: their tables by name, as workspace counts what a project groups.
_OWNED_PERSONAS = text(
    "SELECT id, name FROM personas WHERE owner_id = :u ORDER BY id FOR UPDATE")
# Every owner row locked (no LIMIT: a locked row found changed after the wait is left
# out, and LIMIT 1 would then answer none though others qualify): a co-owner leaving or
# demoted at once either commits first, and is no heir, or waits for the hand-over.
_PERSONA_HEIR = text(
    "SELECT user_id FROM persona_members WHERE persona_id = :p AND role = 'owner' "
    "AND user_id <> :u ORDER BY created_at, id FOR UPDATE")
_TAKE_OVER_PERSONA = text(
    "WITH member AS (DELETE FROM persona_members WHERE persona_id = :p AND user_id = :h "
    "AND role = 'owner') "
    "UPDATE personas SET owner_id = :h, updated_at = now() WHERE id = :p")
_PERSONA_AGENTS = text("SELECT id FROM agents WHERE persona_id = :p ORDER BY id")
_DELETE_PERSONA = text("DELETE FROM personas WHERE id = :p")
# Only a persona's owners invite: their invitations stand while they are one
# (roost.agents.personas withdraws them when an owner is removed, leaves or is demoted).
_WITHDRAW_PERSONA_INVITATIONS = text(
    "DELETE FROM persona_invitations WHERE invited_by = :u RETURNING persona_id, id")


async def _hand_over_personas_of(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> None:
    """Before ``user_id``'s account is deleted (same transaction): each persona they own
    (``owner_id``) passes to the member with role ``owner`` who joined it first
    (``created_at``, then id), whose member row goes (an owner is no member), audited as
    ``persona.owner_changed``; one with no other owner is deleted with its agents, mail
    and secrets, audited as ``persona.delete`` (as ``roost.agents.personas.delete_persona``
    records it).  Personas are locked in id order, so two deletions cannot deadlock.
    The invitations they sent to personas that remain are withdrawn, audited as
    ``persona.invitations_withdrawn``."""
    owned = (await session.execute(_OWNED_PERSONAS, {"u": user_id})).tuples().all()
    for persona_id, name in owned:
        heir = (await session.scalars(_PERSONA_HEIR, {"p": persona_id, "u": user_id})).first()
        if heir is not None:
            await session.execute(_TAKE_OVER_PERSONA, {"p": persona_id, "h": heir})
            await record(session, "persona.owner_changed", user_id=principal.user_id,
                         persona_id=persona_id, resource_type="persona",
                         resource_id=persona_id,
                         changes={"before": str(user_id), "after": str(heir),
                                  "reason": "the account of the persona's owner was deleted"})
            continue
        agents = (await session.scalars(_PERSONA_AGENTS, {"p": persona_id})).all()
        await session.execute(_DELETE_PERSONA, {"p": persona_id})
        await record(session, "persona.delete", user_id=principal.user_id,
                     persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                     changes={"name": name, "agents_deleted": [str(a) for a in agents],
                              "reason": "the account of the persona's owner was deleted"})
    withdrawn: dict[uuid.UUID, list[str]] = {}
    for persona_id, invitation_id in (await session.execute(
            _WITHDRAW_PERSONA_INVITATIONS, {"u": user_id})).tuples().all():
        withdrawn.setdefault(persona_id, []).append(str(invitation_id))
    for persona_id, invitations in withdrawn.items():
        await record(session, "persona.invitations_withdrawn", user_id=principal.user_id,
                     persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                     changes={"invited_by": str(user_id), "invitations": invitations,
                              "reason": "the inviter's account was deleted"})


def describe(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "admin": is_admin_user(user)}
