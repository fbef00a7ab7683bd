"""Groups: create/rename/delete, members with role ``member``/``admin``.

Who may do what: any signed-in user creates a group and becomes its admin; members see
the group and its member list; group admins (and site administrators) rename, delete
and manage members; anyone may leave.  A group someone cannot see is "not found",
whether or not it exists.  The last admin cannot leave or be demoted while other
members remain, so a group always has someone in charge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.errors import Conflict, Forbidden, NotFound
from roost.identity.common import require_user
from roost.identity.models import Group, User, UserGroupMembership
from roost.principal import Principal


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
    group = Group(name=name, description=description, created_by=me)
    session.add(group)
    await _flush_unique(session, "a group with that name already exists")
    session.add(UserGroupMembership(user_id=me, group_id=group.id, role="admin"))
    await session.flush()
    await record(session, "group.created", user_id=me, resource_type="group",
                 resource_id=group.id, changes={"name": name})
    return GroupView(group, "admin")


async def list_groups(
    session: AsyncSession, principal: Principal, *, all_groups: bool = False
) -> list[GroupView]:
    """The caller's groups (with their role); ``all_groups`` for administrators."""
    if all_groups:
        if not principal.is_admin:
            raise Forbidden("listing every group needs an administrator")
        mine = {}
        if principal.user_id is not None:
            mine = dict((await session.execute(
                select(UserGroupMembership.group_id, UserGroupMembership.role)
                .where(UserGroupMembership.user_id == principal.user_id))).tuples().all())
        groups = (await session.scalars(select(Group).order_by(Group.name))).all()
        return [GroupView(g, mine.get(g.id)) for g in groups]
    me = require_user(principal)
    rows = (await session.execute(
        select(Group, UserGroupMembership.role)
        .join(UserGroupMembership, UserGroupMembership.group_id == Group.id)
        .where(UserGroupMembership.user_id == me).order_by(Group.name)
    )).tuples().all()
    return [GroupView(g, role) for g, role in rows]


async def get_group(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> GroupView:
    return await _visible(session, principal, group_id)


async def update_group(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *,
    name: str | None = None, description: str | None = None, set_description: bool = False,
) -> GroupView:
    view = await _manageable(session, principal, group_id)
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


async def delete_group(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> None:
    view = await _manageable(session, principal, group_id)
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
    # SECURITY DEFINER lookup: a group admin may add someone they cannot see yet.
    found = await session.scalar(text("SELECT roost_lookup_user_id(:ref)"), {"ref": ref.strip()})
    if found is None:
        raise NotFound("no active account with that username, email or id")
    return uuid.UUID(str(found))


async def add_member(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, *, user: str,
    role: str = "member",
) -> Member:
    await _manageable(session, principal, group_id)
    user_id = await _resolve_user(session, user)
    membership = UserGroupMembership(user_id=user_id, group_id=group_id, role=role)
    session.add(membership)
    await _flush_unique(session, "that user is already a member of the group")
    await record(session, "group.member_added", user_id=principal.user_id, resource_type="group",
                 resource_id=group_id, changes={"member": str(user_id), "role": role})
    named = (await session.execute(
        select(User.username, User.full_name).where(User.id == user_id))).one_or_none()
    username, full_name = (named[0], named[1]) if named is not None else (str(user_id), None)
    return Member(user_id, username, full_name, role, membership.joined_at)


async def _membership(
    session: AsyncSession, group_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = True
) -> UserGroupMembership:
    # FOR UPDATE (against a concurrent "last admin" change) needs the UPDATE policy, which
    # a plain member leaving does not pass; they are no admin, so there is no race.
    stmt = select(UserGroupMembership).where(UserGroupMembership.group_id == group_id,
                                             UserGroupMembership.user_id == user_id)
    row = await session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise NotFound("that user is not a member of the group")
    return row


async def _is_last_admin(session: AsyncSession, group_id: uuid.UUID, membership: UserGroupMembership) -> bool:
    if membership.role != "admin":
        return False
    admins, members = (await session.execute(
        select(func.count().filter(UserGroupMembership.role == "admin"), func.count())
        .where(UserGroupMembership.group_id == group_id)
    )).one()
    return bool(admins == 1 and members > 1)


async def set_member_role(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> UserGroupMembership:
    await _manageable(session, principal, group_id)
    membership = await _membership(session, group_id, user_id)
    if membership.role == role:
        return membership
    if role != "admin" and await _is_last_admin(session, group_id, membership):
        raise Conflict("the group needs at least one admin: promote someone else first")
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
    view = await (_visible if leaving else _manageable)(session, principal, group_id)
    lock = view.my_role == "admin" or principal.is_admin
    membership = await _membership(session, group_id, user_id, lock=lock)
    if await _is_last_admin(session, group_id, membership):
        raise Conflict("the last admin cannot leave while others remain: promote someone first")
    await session.delete(membership)
    await session.flush()
    await record(session, "group.member_left" if leaving else "group.member_removed",
                 user_id=principal.user_id, resource_type="group", resource_id=group_id,
                 changes={"member": str(user_id)})
