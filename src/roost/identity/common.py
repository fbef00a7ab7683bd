"""Small shared pieces of the identity domain: input rules, the key box for secrets at
rest, and principal checks.  (The system principal, ``SYSTEM``, is in ``roost.principal``.)"""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Protocol, TypeVar

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Forbidden, NotFound, Unprocessable
from roost.identity.models import User, UserGroupMembership
from roost.principal import Principal, PrincipalKind
from roost.security.crypto import SecretBox

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
# 32 hex digits once the hyphens are gone: a text that could be read as an account's id.
_UUID_SHAPED_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_EMAIL_LENGTH = 255
# Sessions and devices are listed in one answer, without paging: the newest this many
# (an account signed in from a script every minute must not make its list unbounded).
MAX_LISTED = 100
# Characters a name people read (a group's, shown to those it invites) must not hold:
# controls (Cc: a newline, a terminal's ESC), format characters (Cf: zero-width spaces and
# joiners, bidirectional marks and overrides, which make a name read as another or as
# nothing) and the line and paragraph separators (Zl, Zp).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def nfc(text: str) -> str:
    """``text`` composed (Unicode NFC): macOS keyboards send "é" decomposed, which looks the
    same as the composed "é" but is not equal to it, nor unique beside it."""
    return unicodedata.normalize("NFC", text)


def refuse_hidden_characters(value: str) -> str:
    """``value``, or a ``ValueError`` (a 422 naming the field in a request body) when it
    holds a control, format or separator character (:data:`_HIDDEN_CATEGORIES`)."""
    if any(unicodedata.category(c) in _HIDDEN_CATEGORIES for c in value):
        raise ValueError("must not contain control characters, line breaks or invisible "
                         "formatting characters (zero-width, bidirectional)")
    return value


def normalize_username(raw: str) -> str:
    """``raw`` stripped and lower-cased, or 422 naming the field.  A username spelled like
    a UUID is refused: where a username, e-mail or id is accepted (adding a group or
    persona member), such a name would pass for another account's id."""
    username = raw.strip().lower()
    if not USERNAME_RE.fullmatch(username):
        raise Unprocessable(
            "username must be 3-64 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            extra={"field": "username"},
        )
    if _UUID_SHAPED_RE.fullmatch(username.replace("-", "")):
        raise Unprocessable("username must not look like an id (a UUID): choose another",
                            extra={"field": "username"})
    return username


def normalize_email(raw: str, field: str = "email") -> str:
    """Syntax check (no DNS lookups: servers may be offline) and lower-casing; an error
    names ``field``, the request field that held the address."""
    if len(raw) > MAX_EMAIL_LENGTH:
        raise Unprocessable(
            f"{field} must be at most {MAX_EMAIL_LENGTH} characters", extra={"field": field}
        )
    try:
        # Self-hosted: single-label and test domains are fine, DNS is not consulted.
        checked = validate_email(
            raw.strip(), check_deliverability=False, globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise Unprocessable(f"{field} is not valid: {exc}", extra={"field": field}) from None
    return checked.normalized.lower()


def normalize_login(raw: str) -> str:
    """A sign-in name as it is stored: NFC, stripped, lower-cased, and an e-mail address
    in :func:`normalize_email`'s form (macOS keyboards send "é" decomposed; registration
    stored it composed).  Text that is no valid address is returned plain-normalised."""
    value = nfc(raw).strip().lower()
    if "@" in value:
        try:
            return normalize_email(value)
        except Unprocessable:
            pass
    return value


async def lookup_user_id(session: AsyncSession, ref: str, *, what: str) -> uuid.UUID:
    """The active account a username, e-mail or id names, or 404.  A SECURITY DEFINER
    lookup (migrations 0200, 1140): an owner or group admin may name someone they cannot
    see; a text that is a UUID matches only the account with that id.  The text is read
    as sign-in reads it (:func:`normalize_login`): an address typed with a decomposed "é"
    names the account registered with it composed."""
    found = await session.scalar(text("SELECT roost_lookup_user_id(:ref)"),
                                 {"ref": normalize_login(ref)})
    if found is None:
        raise NotFound(f"no active account with that username, {what} or id")
    return uuid.UUID(str(found))


def is_admin_user(user: User) -> bool:
    return user.role == "admin" or user.is_superuser or user.is_root


def principal_for(
    user: User,
    *,
    kind: PrincipalKind = "system",
    group_ids: frozenset[uuid.UUID] = frozenset(),
    session_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
) -> Principal:
    return Principal(
        user_id=user.id, is_admin=is_admin_user(user), kind=kind, session_id=session_id,
        api_key_id=api_key_id, group_ids=group_ids,
    )


def require_user(principal: Principal, what: str | None = None) -> uuid.UUID:
    """The principal's user id; the operator token is not a user account (403: the
    credentials are good, the action is not theirs).  ``what``: the things that belong
    to users, for the message ("personas", "runs")."""
    if principal.user_id is None:
        raise Forbidden(f"{what} belong to users: call this with a user's credentials, not "
                        "the operator token" if what else
                        "this action needs a user account, not the operator token")
    return principal.user_id


def target_user_id(principal: Principal, user_id: uuid.UUID | None) -> uuid.UUID:
    """``user_id`` when given (others' only for admins; 404 otherwise), else the caller."""
    if user_id is None or user_id == principal.user_id:
        return require_user(principal)
    if not principal.is_admin:
        # Never confirm that another user's id exists.
        raise NotFound("no such user")
    return user_id


async def lock_sign_ins(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Lock the account's row, as a sign-in does once its password check passed
    (``sessions.lock_for_sign_in``), before ending the account's sessions: a sign-in
    running alongside then either commits first, and its session is among those ended,
    or waits and begins after the ending.  Unlocked, the ending's statement could not see
    the sign-in's uncommitted session, which outlived it."""
    await session.execute(select(User.id).where(User.id == user_id)
                          .with_for_update(key_share=True))


async def existing_target_user_id(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None
) -> uuid.UUID:
    """:func:`target_user_id`, and for an administrator naming another account, that the
    account exists (404 "no such user", not an empty answer about nobody)."""
    owner = target_user_id(principal, user_id)
    if owner != principal.user_id:
        await load_user(session, owner)
    return owner


class _UserOwned(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...


OwnedT = TypeVar("OwnedT", bound=_UserOwned)


async def owned_row(
    session: AsyncSession, principal: Principal, model: type[OwnedT], row_id: uuid.UUID,
    what: str,
) -> OwnedT:
    """The ``model`` row ``row_id`` when the principal owns it or is an administrator.
    Another user's row is "no such <what>", exactly like a missing one, so ids cannot be
    probed."""
    row = await session.get(model, row_id)
    if row is None or (row.user_id != principal.user_id and not principal.is_admin):
        raise NotFound(f"no such {what}")
    return row


async def load_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


async def lock_owner_quota(session: AsyncSession, user_id: uuid.UUID, what: str) -> None:
    """Serialise "count, then insert" of one account's ``what`` (API keys, passkeys) until
    the transaction ends, so parallel requests cannot all pass a per-account cap.  An
    advisory lock, not ``FOR UPDATE`` on ``users``: it needs no UPDATE right on the row
    and does not hold up the account's other writes."""
    await session.execute(text("SELECT pg_advisory_xact_lock(7263117, hashtext(:k))"),
                          {"k": f"roost.identity.{what}:{user_id}"})


async def group_ids_of(session: AsyncSession, user_id: uuid.UUID) -> frozenset[uuid.UUID]:
    rows = await session.scalars(
        select(UserGroupMembership.group_id).where(UserGroupMembership.user_id == user_id)
    )
    return frozenset(rows.all())


def secret_box(secrets_key: bytes) -> SecretBox:
    return SecretBox.from_keys(secrets_key)
