"""A user's own account fields, settings and profile (``user_profiles``).  The owner
reads and edits them; administrators anyone's."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.errors import Conflict, Forbidden
from roost.identity import accounts
from roost.identity.common import (
    load_user,
    lock_owner_quota,
    normalize_email,
    normalize_username,
    target_user_id,
)
from roost.identity.config import IdentityConfig
from roost.identity.models import PREFERENCE_COLUMNS, User, UserProfile
from roost.principal import Principal

SETTINGS_FIELDS = ("theme", "timezone", "notifications_enabled", "model_preferences",
                   *PREFERENCE_COLUMNS, "web_search_provider")
PROFILE_FIELDS = (
    "first_name", "last_name", "display_name", "date_of_birth", "phone_number",
    "alternate_phone", "personal_address", "job_title", "company", "department", "work_phone",
    "work_email", "work_address", "preferred_contact_method", "emergency_contact", "bio",
    "website", "linkedin", "twitter", "github", "language",
)
ADMIN_FIELDS = ("role", "status", "tier", "is_verified", "is_active", "is_superuser")


def _aad(user_id: uuid.UUID) -> bytes:
    return b"web_search_api_key:" + user_id.bytes


def settings_of(user: User) -> dict[str, Any]:
    out = {f: getattr(user, f) for f in SETTINGS_FIELDS}
    out["web_search_api_key_set"] = user.web_search_api_key_encrypted is not None
    return out


async def get_settings(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None
) -> User:
    return await load_user(session, target_user_id(principal, user_id))


async def update_settings(
    session: AsyncSession, cfg: IdentityConfig, principal: Principal, changes: dict[str, Any],
    user_id: uuid.UUID | None = None,
) -> User:
    """``changes`` holds only the fields the caller sent (already validated)."""
    user = await load_user(session, target_user_id(principal, user_id))
    changed: list[str] = []
    for field in SETTINGS_FIELDS:
        if field in changes and changes[field] != getattr(user, field):
            setattr(user, field, changes[field])
            changed.append(field)
    key = changes.get("web_search_api_key")
    if key:
        user.web_search_api_key_encrypted = cfg.box.encrypt(key, _aad(user.id)).decode("ascii")
        changed.append("web_search_api_key")
    elif "web_search_api_key" in changes and user.web_search_api_key_encrypted is not None:
        # Clearing ("" or null) is a change only when a key was set.
        user.web_search_api_key_encrypted = None
        changed.append("web_search_api_key")
    if changed:
        await session.flush()
        await record(session, "user.settings_updated", user_id=principal.user_id or user.id,
                     resource_type="user", resource_id=user.id, metadata={"fields": changed})
    return user


def web_search_api_key(cfg: IdentityConfig, user: User) -> str | None:
    """The decrypted key, for the server-side web search tool only."""
    if user.web_search_api_key_encrypted is None:
        return None
    return cfg.box.decrypt_str(user.web_search_api_key_encrypted, _aad(user.id))


async def get_profile(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None
) -> tuple[User, UserProfile | None]:
    user = await load_user(session, target_user_id(principal, user_id))
    profile = await session.scalar(select(UserProfile).where(UserProfile.user_id == user.id))
    return user, profile


async def update_profile(
    session: AsyncSession, principal: Principal, changes: dict[str, Any],
    user_id: uuid.UUID | None = None,
) -> tuple[User, UserProfile]:
    # One edit of an account's profile at a time: two first edits at once would both
    # insert the row (a 409 for one); the second now waits, then finds and updates it.
    await lock_owner_quota(session, target_user_id(principal, user_id), "profile")
    user, profile = await get_profile(session, principal, user_id)
    if changes.get("work_email") is not None:
        # "" is no address (a 422, as for website and the phones); null clears it.
        changes["work_email"] = normalize_email(changes["work_email"], field="work_email")
    if profile is None:
        profile = UserProfile(user_id=user.id)
        session.add(profile)
    changed = [f for f in PROFILE_FIELDS if f in changes and changes[f] != getattr(profile, f)]
    for field in changed:
        setattr(profile, field, changes[field])
    if "timezone" in changes and changes["timezone"] and changes["timezone"] != user.timezone:
        user.timezone = changes["timezone"]
        changed.append("timezone")
    await session.flush()
    if changed:
        await record(session, "user.profile_updated", user_id=principal.user_id or user.id,
                     resource_type="user", resource_id=user.id, metadata={"fields": changed})
    return user, profile


async def update_account(
    session: AsyncSession, principal: Principal, changes: dict[str, Any],
    user_id: uuid.UUID | None = None,
) -> User:
    """Own username, email, name, avatar; role/status/tier/flags go through
    :func:`roost.identity.accounts.admin_update` (administrators only)."""
    target = target_user_id(principal, user_id)
    admin_changes = {k: v for k, v in changes.items() if k in ADMIN_FIELDS}
    if admin_changes and not principal.is_admin:
        raise Forbidden(f"only an administrator may change {', '.join(sorted(admin_changes))}")
    user = await load_user(session, target)
    own: dict[str, Any] = {}
    if changes.get("username") is not None:
        own["username"] = normalize_username(changes["username"])
    if changes.get("email") is not None:
        own["email"] = normalize_email(changes["email"])
    for field in ("full_name", "avatar_url"):
        if field in changes:
            own[field] = changes[field]
    changed = [f for f, v in own.items() if v != getattr(user, f)]
    if "full_name" in changed:
        accounts.check_full_name(own["full_name"])  # the 422 registration gives
    for field in changed:
        setattr(user, field, own[field])
    if changed:
        # Under RLS the caller cannot see other accounts, so the unique constraints are
        # the check; a savepoint keeps the transaction usable to answer 409.
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            field = "email" if "uq_users_email" in str(exc.orig) else "username"
            raise Conflict(f"that {field} is already taken", extra={"field": field}) from None
        await record(session, "user.updated", user_id=principal.user_id or user.id,
                     resource_type="user", resource_id=user.id,
                     changes={f: own[f] for f in changed})
    if admin_changes:
        user = await accounts.admin_update(session, principal, user.id, admin_changes)
    return user

