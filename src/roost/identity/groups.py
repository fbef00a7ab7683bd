"""Groups: create/rename/delete, members with role ``member``/``admin``, invitations.

Who may do what: any signed-in user creates a group and becomes its admin; members see
the group and its member list; group admins (and site administrators) rename, delete
and manage members; anyone may leave.  A group someone cannot see is "not found",
whether or not it exists.

Joining takes consent.  A group has authority over its members (a group-scope
``chat.system`` prompt overrides theirs, documents shared with it enter their searches),
so a group admin who is not a site administrator does not add people: they *invite*
them (``group_invitations``), and the membership exists once the invitee accepts, with
the role the invitation names.  The invitee may decline; the group's admins list and
revoke pending invitations.  Site administrators (and the operator token) add members
directly.

A group always has someone in charge: the last admin cannot leave or be demoted while
other members remain, and deleting the last admin's account hands the group to its
longest-standing member (:func:`hand_over_groups_of`).  Every change that can take an
admin away locks the group's row first (``roost_lock_group``, migration 1140), so two
at once cannot both pass the count.  A group left without any admin (its last member
gone) drops its pending invitations: nobody joins a group nobody runs.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, literal, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.common import lock_owner_quota, lookup_user_id, require_user
from roost.identity.invitations import (
    join_as_invited,
    my_invitation,
    pending_invitations,
    take_invitation,
)
from roost.identity.models import Group, GroupInvitation, User, UserGroupMembership
from roost.pagination import MALFORMED_CURSOR, cursor_uuid, decode_cursor, encode_cursor, page_of
from roost.principal import Principal

# Groups an account (not a site administrator) may have created that still exist: each
# takes a name unique across the server.
MAX_GROUPS_PER_USER = 100
MAX_GROUP_NAME = 128  # groups.name is varchar(128)


@dataclass(frozen=True)
class GroupView:
    group: Group
    my_role: str | None


@dataclass(frozen=True)
class Member:
    user_id: uuid.UUID
    username: str
    full_name: str | None
    role: str
    joined_at: datetime


@dataclass(frozen=True)
class Invitation:
    id: uuid.UUID
    group_id: uuid.UUID
    group_name: str | None
    user_id: uuid.UUID
    username: str | None
    role: str
    invited_by: uuid.UUID | None
    invited_by_username: str | None
    created_at: datetime


async def _my_role(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> str | None:
    if principal.user_id is None:
        return None
    return await session.scalar(
        select(UserGroupMembership.role).where(UserGroupMembership.group_id == group_id,
                                               UserGroupMembership.user_id == principal.user_id)
    )


async def _visible(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> GroupView:
    group = await session.get(Group, group_id)
    role = await _my_role(session, principal, group_id) if group is not None else None
    if group is None or (role is None and not principal.is_admin):
        raise NotFound("no such group")
    return GroupView(group, role)


async def _manageable(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> GroupView:
    view = await _visible(session, principal, group_id)
    if view.my_role != "admin" and not principal.is_admin:
        raise Forbidden("only the group's admins can do this")
    return view


async def _lock_group(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> None:
    """``SELECT ... FOR UPDATE`` of the group's row, before counting its admins: every
    change that can take an admin away takes it, so they run one after the other.
    Site administrators lock it directly; members through ``roost_lock_group`` (the
    groups UPDATE policy, which a row lock needs, admits only the group's admins)."""
    if principal.is_admin:
        found = await session.scalar(
            select(Group.id).where(Group.id == group_id).with_for_update())
    else:
        found = await session.scalar(text("SELECT roost_lock_group(:g)"), {"g": group_id})
    if found is None:  # deleted meanwhile, or left
        raise NotFound("no such group")


async def _locked(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *, manage: bool
) -> GroupView:
    """The group checked (visible; ``manage``: the caller is its admin), then locked, then
    checked again: a request that waited for the lock acts on what the one before it
    left (an admin it demoted or removed meanwhile is refused here, not by the database;
    a group it deleted is not found)."""
    view = await (_manageable if manage else _visible)(session, principal, group_id)
    await _lock_group(session, principal, group_id)
    if principal.is_admin:
        return view
    role = await _my_role(session, principal, group_id)
    if role is None:
        raise NotFound("no such group")
    if manage and role != "admin":
        raise Forbidden("only the group's admins can do this")
    return GroupView(view.group, role)


async def _flush_unique(session: AsyncSession, message: str) -> None:
    # Other groups are invisible under RLS, so the unique constraint is the check.
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(message) from None


async def create_group(
    session: AsyncSession, principal: Principal, *, name: str, description: str | None = None
) -> GroupView:
    me = require_user(principal)
    if not principal.is_admin:
        # Each group holds a name unique across the server: an account cannot squat them.
        await lock_owner_quota(session, me, "groups")  # count and insert as one step
        made = await session.scalar(select(func.count()).select_from(Group)
                                    .where(Group.created_by == me))
        if (made or 0) >= MAX_GROUPS_PER_USER:
            raise BadRequest(f"an account may have created at most {MAX_GROUPS_PER_USER} "
                             "groups that still exist; delete unused ones first")
    group = Group(name=name, description=description, created_by=me)
    session.add(group)
    await _flush_unique(session, "a group with that name already exists")
    session.add(UserGroupMembership(user_id=me, group_id=group.id, role="admin"))
    await session.flush()
    await record(session, "group.created", user_id=me, resource_type="group",
                 resource_id=group.id, changes={"name": name})
    return GroupView(group, "admin")


def _group_cursor(view: GroupView) -> str:
    return encode_cursor({"n": view.group.name, "id": str(view.group.id)})


def _after_group(cursor: str) -> ColumnElement[bool]:
    """Groups after the cursor's, in (name, id) order; its name must be one a group can
    have (400 otherwise, never a value the database chokes on)."""
    name = decode_cursor(cursor).get("n")
    if not isinstance(name, str) or not name or len(name) > MAX_GROUP_NAME or "\x00" in name:
        raise BadRequest(MALFORMED_CURSOR)
    return tuple_(Group.name, Group.id) > tuple_(literal(name), literal(cursor_uuid(cursor)))


async def list_groups(
    session: AsyncSession, principal: Principal, *, all_groups: bool = False, limit: int,
    cursor: str | None = None,
) -> tuple[list[GroupView], str | None]:
    """One page of the caller's groups (with their role), by name, and the next cursor;
    ``all_groups`` for administrators: every group (with the caller's role, if any)."""
    mine = (UserGroupMembership.group_id == Group.id) & (
        UserGroupMembership.user_id == principal.user_id)
    if all_groups:
        if not principal.is_admin:
            raise Forbidden("listing every group needs an administrator")
        stmt = select(Group, UserGroupMembership.role).outerjoin(UserGroupMembership, mine)
    else:
        require_user(principal)
        stmt = select(Group, UserGroupMembership.role).join(UserGroupMembership, mine)
    if cursor is not None:
        stmt = stmt.where(_after_group(cursor))
    rows = (await session.execute(
        stmt.order_by(Group.name, Group.id).limit(limit + 1))).tuples().all()
    return page_of([GroupView(g, role) for g, role in rows], limit, _group_cursor)


async def get_group(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> GroupView:
    return await _visible(session, principal, group_id)


async def update_group(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *,
    name: str | None = None, set_name: bool = False,
    description: str | None = None, set_description: bool = False,
) -> GroupView:
    """Rename (``set_name``: ``name`` was sent; a group must have one, so null is a 422)
    or describe (``set_description``: ``description`` was sent; null clears it)."""
    if set_name and name is None:
        raise Unprocessable("name cannot be null: a group needs a name", extra={"field": "name"})
    # Locked (and checked again): a rename waiting on the group's deletion is a 404.
    view = await _locked(session, principal, group_id, manage=True)
    await session.refresh(view.group)  # as the change it may have waited on left it
    before = {"name": view.group.name, "description": view.group.description}
    if name is not None:
        view.group.name = name
    if set_description:
        view.group.description = description
    await _flush_unique(session, "a group with that name already exists")
    after = {"name": view.group.name, "description": view.group.description}
    if after != before:
        await record(session, "group.updated", user_id=principal.user_id, resource_type="group",
                     resource_id=group_id, changes={"before": before, "after": after})
    return view


async def _left_empty_by_me(session: AsyncSession, principal: Principal,
                            group_id: uuid.UUID) -> GroupView | None:
    """The caller's own group (``created_by``) that has no member left, locked: its last
    member may leave, and the group would then keep its server-unique name and its place
    among its creator's groups with nobody able to delete it (row-level security lets the
    creator reach the row)."""
    if principal.is_admin or principal.user_id is None:
        return None
    group = await session.scalar(select(Group).where(
        Group.id == group_id, Group.created_by == principal.user_id).with_for_update())
    if group is None or await session.scalar(select(func.count()).where(
            UserGroupMembership.group_id == group_id)):
        return None
    return GroupView(group, None)


async def delete_group(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> None:
    # Locked: a second deletion at once waits, then finds the group gone (404, one record).
    view = (await _left_empty_by_me(session, principal, group_id)
            or await _locked(session, principal, group_id, manage=True))
    # A live subscription would go with the group (its foreign key cascades) before its
    # period was invoiced: the usage already charged to it never billed, and by a group
    # admin who may not cancel subscriptions.  (billing's table, by name: a higher domain.)
    live = await session.scalar(text(
        "SELECT id FROM subscriptions WHERE group_id = :g AND status <> 'canceled' LIMIT 1"),
        {"g": group_id})
    if live is not None:
        raise Conflict(f"group {group_id} has a subscription that is not canceled ({live}): "
                       "an administrator cancels it first (and issues its period's invoice)",
                       extra={"subscription_id": str(live)})
    await session.delete(view.group)
    await session.flush()
    await record(session, "group.deleted", user_id=principal.user_id, resource_type="group",
                 resource_id=group_id, changes={"name": view.group.name})


async def list_members(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> list[Member]:
    await _visible(session, principal, group_id)
    rows = (await session.execute(
        select(UserGroupMembership, User.username, User.full_name)
        .join(User, User.id == UserGroupMembership.user_id)
        .where(UserGroupMembership.group_id == group_id)
        .order_by(UserGroupMembership.joined_at, UserGroupMembership.id)
    )).tuples().all()
    return [Member(m.user_id, username, full_name, m.role, m.joined_at)
            for m, username, full_name in rows]


async def _resolve_user(session: AsyncSession, ref: str) -> uuid.UUID:
    return await lookup_user_id(session, ref, what="email")


async def _member_named(session: AsyncSession, membership: UserGroupMembership) -> Member:
    named = (await session.execute(
        select(User.username, User.full_name).where(User.id == membership.user_id))).one_or_none()
    username, full_name = (named[0], named[1]) if named is not None else (str(membership.user_id), None)
    return Member(membership.user_id, username, full_name, membership.role, membership.joined_at)


async def _is_member(session: AsyncSession, group_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    # The caller is the group's admin (who sees its members) or a site administrator.
    found = await session.scalar(select(UserGroupMembership.id).where(
        UserGroupMembership.group_id == group_id, UserGroupMembership.user_id == user_id))
    return found is not None


async def add_member(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *, user: str,
    role: str = "member",
) -> Member | Invitation:
    """A site administrator (or the operator) adds the member: a :class:`Member`.  A group
    admin invites them: a pending :class:`Invitation` (the same one when they are invited
    already, unchanged), which becomes a membership when they accept.  409 when they are
    a member already."""
    await _manageable(session, principal, group_id)
    user_id = await _resolve_user(session, user)
    if not principal.is_admin:
        return await _invite(session, principal, group_id, user_id, role)
    membership = UserGroupMembership(user_id=user_id, group_id=group_id, role=role)
    session.add(membership)
    await _flush_unique(session, "that user is already a member of the group")
    # An invitation still pending is answered by the membership itself.
    await session.execute(delete(GroupInvitation).where(
        GroupInvitation.group_id == group_id, GroupInvitation.user_id == user_id))
    await record(session, "group.member_added", user_id=principal.user_id, resource_type="group",
                 resource_id=group_id, changes={"member": str(user_id), "role": role})
    return await _member_named(session, membership)


async def _invite(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, user_id: uuid.UUID,
    role: str,
) -> Invitation:
    if await _is_member(session, group_id, user_id):
        raise Conflict("that user is already a member of the group")
    pending = await session.scalar(select(GroupInvitation).where(
        GroupInvitation.group_id == group_id, GroupInvitation.user_id == user_id))
    if pending is not None:
        return (await _named(session, [pending]))[0]
    invitation_id = await session.scalar(
        pg_insert(GroupInvitation)
        .values(group_id=group_id, user_id=user_id, role=role, invited_by=principal.user_id)
        .on_conflict_do_nothing(index_elements=["group_id", "user_id"])
        .returning(GroupInvitation.id))
    if invitation_id is None:
        # Invited at the same moment by another request (this statement waited for it to
        # commit): that invitation.
        pending = await session.scalar(select(GroupInvitation).where(
            GroupInvitation.group_id == group_id, GroupInvitation.user_id == user_id))
        if pending is None:
            raise Conflict("the group or that account changed meanwhile: try again")
        return (await _named(session, [pending]))[0]
    invitation = await session.get_one(GroupInvitation, invitation_id)
    await record(session, "group.member_invited", user_id=principal.user_id,
                 resource_type="group", resource_id=group_id,
                 changes={"member": str(user_id), "role": role, "invitation": str(invitation.id)})
    return (await _named(session, [invitation]))[0]


async def _named(session: AsyncSession, rows: list[GroupInvitation]) -> list[Invitation]:
    """``rows`` with the group's name and the invitee's and inviter's usernames (through
    ``roost_group_invitation_names``: an invitee may not read the group or the inviter
    before joining, a group admin not the invitee's account)."""
    if not rows:
        return []
    names = {
        uuid.UUID(str(row[0])): (row[1], row[2], row[3])
        for row in (await session.execute(
            text("SELECT id, group_name, username, invited_by_username "
                 "FROM roost_group_invitation_names(CAST(:ids AS uuid[]))"),
            {"ids": [r.id for r in rows]})).tuples().all()
    }
    out = []
    for r in rows:
        group_name, username, inviter = names.get(r.id, (None, None, None))
        out.append(Invitation(r.id, r.group_id, group_name, r.user_id, username, r.role,
                              r.invited_by, inviter, r.created_at))
    return out


async def my_invitations(
    session: AsyncSession, principal: Principal, *, limit: int, cursor: str | None = None,
) -> tuple[list[Invitation], str | None]:
    """The caller's pending invitations, newest first."""
    me = require_user(principal, "group invitations")
    rows, next_cursor = await pending_invitations(
        session, GroupInvitation, GroupInvitation.user_id, me, limit=limit, cursor=cursor)
    return await _named(session, rows), next_cursor


async def group_invitations(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *, limit: int,
    cursor: str | None = None,
) -> tuple[list[Invitation], str | None]:
    """A group's pending invitations, newest first (its admins, site administrators)."""
    await _manageable(session, principal, group_id)
    rows, next_cursor = await pending_invitations(
        session, GroupInvitation, GroupInvitation.group_id, group_id, limit=limit, cursor=cursor)
    return await _named(session, rows), next_cursor


async def accept_invitation(
    session: AsyncSession, principal: Principal, invitation_id: uuid.UUID
) -> Member:
    """Join the group with the invited role; the invitation is gone."""
    me = require_user(principal, "group invitations")
    invitation = await my_invitation(session, GroupInvitation, me, invitation_id)
    group_id, role = invitation.group_id, invitation.role
    membership = UserGroupMembership(user_id=me, group_id=group_id, role=role)
    # Withdrawn meanwhile (revoked, or its group lost its last admin): nothing stands.
    await join_as_invited(session, membership, "group")
    await take_invitation(session, invitation)
    await record(session, "group.invitation_accepted", user_id=me, resource_type="group",
                 resource_id=group_id,
                 changes={"member": str(me), "role": role, "invitation": str(invitation_id)})
    return await _member_named(session, membership)


async def decline_invitation(
    session: AsyncSession, principal: Principal, invitation_id: uuid.UUID
) -> None:
    me = require_user(principal, "group invitations")
    invitation = await my_invitation(session, GroupInvitation, me, invitation_id)
    group_id = invitation.group_id
    await take_invitation(session, invitation)
    await record(session, "group.invitation_declined", user_id=me, resource_type="group",
                 resource_id=group_id, changes={"member": str(me), "invitation": str(invitation_id)})


async def revoke_invitation(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, invitation_id: uuid.UUID
) -> None:
    """A group admin (or a site administrator) withdraws a pending invitation."""
    await _manageable(session, principal, group_id)
    invitation = await session.scalar(select(GroupInvitation).where(
        GroupInvitation.id == invitation_id, GroupInvitation.group_id == group_id))
    if invitation is None:
        raise NotFound("no such invitation")
    member = invitation.user_id
    await take_invitation(session, invitation)
    await record(session, "group.invitation_revoked", user_id=principal.user_id,
                 resource_type="group", resource_id=group_id,
                 changes={"member": str(member), "invitation": str(invitation_id)})


async def _membership(
    session: AsyncSession, group_id: uuid.UUID, user_id: uuid.UUID
) -> UserGroupMembership:
    # Read after the group's lock: populate_existing so the role is the committed one.
    row = await session.scalar(
        select(UserGroupMembership).where(UserGroupMembership.group_id == group_id,
                                          UserGroupMembership.user_id == user_id)
        .execution_options(populate_existing=True))
    if row is None:
        raise NotFound("that user is not a member of the group")
    return row


async def _admin_counts(session: AsyncSession, group_id: uuid.UUID) -> tuple[int, int]:
    admins, members = (await session.execute(
        select(func.count().filter(UserGroupMembership.role == "admin"), func.count())
        .where(UserGroupMembership.group_id == group_id)
    )).one()
    return int(admins), int(members)


async def _is_last_admin(session: AsyncSession, group_id: uuid.UUID, membership: UserGroupMembership) -> bool:
    if membership.role != "admin":
        return False
    admins, members = await _admin_counts(session, group_id)
    return admins == 1 and members > 1


async def _withdraw_invitations(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID,
    sent_by: uuid.UUID | None = None,
) -> None:
    """Withdraw the group's pending invitations whose sender no longer answers for them:
    all of them when the group is left without an admin (its last member gone, a lone
    admin demoting themself), else those ``sent_by`` an admin who is demoted, removed,
    leaves or whose account ends (nobody joins on the word of an admin the group no
    longer has, as for personas).  Called while the caller still may delete them (before
    its own membership goes, for someone leaving)."""
    stmt = delete(GroupInvitation).where(GroupInvitation.group_id == group_id)
    if sent_by is not None:
        stmt = stmt.where(GroupInvitation.invited_by == sent_by)
    gone = await session.execute(stmt.returning(GroupInvitation.id)
                                 .execution_options(synchronize_session=False))
    dropped = [str(i) for i in gone.scalars().all()]
    if dropped:
        reason = ("the group has no admin left" if sent_by is None
                  else "their sender is no longer an admin of the group")
        await record(session, "group.invitations_withdrawn", user_id=principal.user_id,
                     resource_type="group", resource_id=group_id,
                     changes={"invitations": dropped, "reason": reason})


async def set_member_role(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> UserGroupMembership:
    await _locked(session, principal, group_id, manage=True)
    membership = await _membership(session, group_id, user_id)
    if membership.role == role:
        return membership
    if role != "admin" and await _is_last_admin(session, group_id, membership):
        raise Conflict("the group needs at least one admin: promote someone else first")
    if role != "admin" and membership.role == "admin":
        admins, _ = await _admin_counts(session, group_id)
        # A lone admin stepping down: nobody runs the group any more; else theirs only.
        await _withdraw_invitations(session, principal, group_id,
                                    None if admins == 1 else user_id)
    before = membership.role
    membership.role = role
    await session.flush()
    await record(session, "group.member_role_changed", user_id=principal.user_id,
                 resource_type="group", resource_id=group_id,
                 changes={"member": str(user_id), "before": before, "after": role})
    return membership


async def remove_member(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    leaving = user_id == principal.user_id
    await _locked(session, principal, group_id, manage=not leaving)
    membership = await _membership(session, group_id, user_id)
    if await _is_last_admin(session, group_id, membership):
        raise Conflict("the last admin cannot leave while others remain: promote someone first")
    if membership.role == "admin":
        admins, _ = await _admin_counts(session, group_id)
        # The last member, and its admin, goes: every invitation; else theirs.
        await _withdraw_invitations(session, principal, group_id,
                                    None if admins == 1 else user_id)
    await session.delete(membership)
    await session.flush()
    await record(session, "group.member_left" if leaving else "group.member_removed",
                 user_id=principal.user_id, resource_type="group", resource_id=group_id,
                 changes={"member": str(user_id)})


async def hand_over_groups_of(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> None:
    """Before ``user_id``'s account is deleted (by a site administrator, in the same
    transaction): each group whose last admin they are gets a new one, the member who
    joined it first (``joined_at``, then id); a group they are alone in withdraws its
    pending invitations.  Every group of theirs is locked, in id order (so two deletions
    cannot deadlock), before their roles are read: a member's deletion too, so the heir's
    account deleted at the same moment as the last admin's waits, then finds itself the
    admin and hands the group on (it read no admin role, took no lock, and the group was
    left with no admin)."""
    group_ids = (await session.scalars(
        select(UserGroupMembership.group_id)
        .where(UserGroupMembership.user_id == user_id)
        .order_by(UserGroupMembership.group_id))).all()
    for group_id in group_ids:
        with contextlib.suppress(NotFound):  # a group deleted meanwhile has nothing to hand on
            await _lock_group(session, principal, group_id)
    administered = (await session.scalars(
        select(UserGroupMembership.group_id)
        .where(UserGroupMembership.user_id == user_id, UserGroupMembership.role == "admin",
               UserGroupMembership.group_id.in_(group_ids))
        .order_by(UserGroupMembership.group_id)
        .execution_options(populate_existing=True))).all()
    for group_id in administered:
        others = await session.scalar(select(func.count()).where(
            UserGroupMembership.group_id == group_id, UserGroupMembership.role == "admin",
            UserGroupMembership.user_id != user_id))
        if others:
            await _withdraw_invitations(session, principal, group_id, user_id)
            continue
        heir = await session.scalar(
            select(UserGroupMembership)
            .where(UserGroupMembership.group_id == group_id,
                   UserGroupMembership.user_id != user_id)
            .order_by(UserGroupMembership.joined_at, UserGroupMembership.id).limit(1)
            .with_for_update().execution_options(populate_existing=True))
        if heir is None:
            await _withdraw_invitations(session, principal, group_id)
            continue
        await _withdraw_invitations(session, principal, group_id, user_id)
        heir.role = "admin"
        await session.flush()
        await record(session, "group.member_role_changed", user_id=principal.user_id,
                     resource_type="group", resource_id=group_id,
                     changes={"member": str(heir.user_id), "before": "member", "after": "admin",
                              "reason": "the account of the group's last admin was deleted",
                              "previous_admin": str(user_id)})
