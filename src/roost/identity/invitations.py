"""What joining by invitation shares between groups (roost.identity.groups) and personas
(roost.agents.personas): finding your own invitation, taking it, and inserting the
membership it offers, which the membership table's row-level security admits only while
the invitation is there (migrations 1140 and 1150)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.errors import sqlstate
from roost.errors import Conflict, NotFound
from roost.pagination import newest_first

Invitation = TypeVar("Invitation")


async def my_invitation(session: AsyncSession, model: type[Invitation], me: uuid.UUID,
                        invitation_id: uuid.UUID) -> Invitation:
    """The caller's invitation ``invitation_id``; NotFound for another's, as for none."""
    table: Any = model
    row: Invitation | None = await session.scalar(
        select(table).where(table.id == invitation_id, table.user_id == me))
    if row is None:
        raise NotFound("no such invitation")
    return row


async def pending_invitations(
    session: AsyncSession, model: type[Invitation], column: Any, value: uuid.UUID, *,
    limit: int, cursor: str | None,
) -> tuple[list[Invitation], str | None]:
    """A page of the pending invitations whose ``column`` is ``value`` (the invitee's,
    or a group's or persona's), newest first, and the next page's cursor."""
    table: Any = model
    rows, next_cursor = await newest_first(session, select(table).where(column == value),
                                           table.created_at, table.id, limit=limit,
                                           cursor=cursor)
    return list(rows), next_cursor


async def take_invitation(session: AsyncSession, invitation: Any) -> None:
    """Delete the invitation; NotFound when it was revoked, declined or withdrawn since
    it was read (then nothing this transaction did stands)."""
    table = type(invitation)
    gone = await session.execute(
        delete(table).where(table.id == invitation.id)
        .returning(table.id).execution_options(synchronize_session=False))
    if gone.first() is None:
        raise NotFound("no such invitation")
    session.expunge(invitation)


async def join_as_invited(session: AsyncSession, membership: Any, what: str) -> None:
    """Insert ``membership`` (of a ``what``: "group", "persona") while its invitation is
    still there: the invitation is taken after it, so a membership whose invitation went
    meanwhile is refused by the wall (NotFound), as is one whose ``what`` was deleted."""
    session.add(membership)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if sqlstate(exc) == "23503":  # the group or persona was deleted meanwhile
            raise NotFound("no such invitation") from None
        raise Conflict(f"you are already a member of that {what}") from None
    except DBAPIError as exc:
        if sqlstate(exc) == "42501":  # the invitation went meanwhile: the wall refused
            raise NotFound("no such invitation") from None
        raise
