"""Personas and their members: create, list, read, change and delete personas; add,
re-role and remove members.

Who may do what (checked here first; row-level security, migration 0600, is the second
wall): a persona is visible to its owner (``owner_id``) and its members; owners and
editors change it; owners (``owner_id``, or a member with role ``owner``) delete it and
manage its members; any member may leave.  Administrators may do everything.  A persona
the caller cannot see is "not found" whether or not it exists; one they see but may not
change is 403 (the repository's convention: knowledge documents, groups).

Joining takes consent, as for groups (``roost.identity.groups``): a persona's owner who
is not a site administrator does not add people, they *invite* them
(``persona_invitations``, migration 1150), and the membership exists once the invitee
accepts, with the role the invitation names.  The invitee may decline; the persona's
owners list and revoke pending invitations.  Site administrators (and the operator
token) add members directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast

from sqlalchemy import delete, false, func, or_, select, text, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Agent, Persona, PersonaInvitation, PersonaMember
from roost.agents.schemas import (
    MemberAdd,
    PersonaCreate,
    PersonaOut,
    PersonaUpdate,
    address_key,
)
from roost.audit.service import record
from roost.db.errors import flush_unique
from roost.db.lookup import one_or_404
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.common import lookup_user_id, require_user
from roost.identity.invitations import (
    join_as_invited,
    my_invitation,
    pending_invitations,
    take_invitation,
)
from roost.identity.models import User
from roost.llm.models import LLMProviderRow
from roost.pagination import DEFAULT_LIMIT, newest_first
from roost.principal import Principal

Role = Literal["owner", "editor", "viewer"]
_RANK: Final[dict[str | None, int]] = {None: 0, "viewer": 1, "editor": 2, "owner": 3}
EMAIL_INDEX: Final = "uq_personas_email_address"
# Long free text is audited as "changed", not copied into the chain.
_TEXT_FIELDS: Final = ("description", "system_prompt")


@dataclass(frozen=True)
class PersonaView:
    persona: Persona
    role: Role | None  # the caller's own role (None: seen as an administrator)


@dataclass(frozen=True)
class MemberView:
    member: PersonaMember
    username: str | None


@dataclass(frozen=True)
class InvitationView:
    id: uuid.UUID
    persona_id: uuid.UUID
    persona_name: str | None
    user_id: uuid.UUID
    username: str | None  # None when the caller may not see the invitee's account
    role: Role
    invited_by: uuid.UUID | None
    invited_by_username: str | None
    created_at: datetime

def persona_out(view: PersonaView) -> PersonaOut:
    p = view.persona
    return PersonaOut(
        id=p.id, owner_id=p.owner_id, name=p.name, description=p.description,
        system_prompt=p.system_prompt, default_provider=p.default_provider,
        default_model=p.default_model, fallback_providers=list(p.fallback_providers or []),
        email_address=p.email_address, email_agent_id=p.email_agent_id, is_active=p.is_active,
        container_id=p.container_id, my_role=view.role, created_at=p.created_at,
        updated_at=p.updated_at,
    )


def visible_personas(actor: Principal) -> Any:
    """SQL condition: personas ``actor`` may see (the same rule as the RLS policy)."""
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    mine = select(PersonaMember.persona_id).where(PersonaMember.user_id == actor.user_id)
    return or_(Persona.owner_id == actor.user_id, Persona.id.in_(mine))


async def _roles(session: AsyncSession, actor: Principal,
                 personas: Sequence[Persona]) -> dict[uuid.UUID, Role | None]:
    """The actor's role in each persona: owner by ``owner_id``, else their membership."""
    roles: dict[uuid.UUID, Role | None] = {
        p.id: "owner" if p.owner_id == actor.user_id else None for p in personas}
    others = [pid for pid, role in roles.items() if role is None]
    if others and actor.user_id is not None:
        rows = (await session.execute(
            select(PersonaMember.persona_id, PersonaMember.role).where(
                PersonaMember.user_id == actor.user_id, PersonaMember.persona_id.in_(others))
        )).tuples().all()
        for persona_id, role in rows:
            roles[persona_id] = cast(Role, role)  # the CHECK constraint keeps it one
    return roles


async def role_of(session: AsyncSession, persona_id: uuid.UUID,
                  user_id: uuid.UUID) -> Role | None:
    """``user_id``'s role in the persona now (owner by ``owner_id``, else their membership),
    None for a non-member, read in one statement; in the system's scope (a run's checks)
    it sees every persona."""
    row = (await session.execute(select(
        Persona.owner_id == user_id,
        select(PersonaMember.role).where(PersonaMember.persona_id == Persona.id,
                                         PersonaMember.user_id == user_id)
        .scalar_subquery()).where(Persona.id == persona_id))).first()
    if row is None:
        return None
    return "owner" if row[0] else cast(Role | None, row[1])


async def get_persona(session: AsyncSession, actor: Principal,
                      persona_id: uuid.UUID) -> PersonaView:
    """A persona the actor can see, with their role in it; else 404."""
    persona = await session.scalar(select(Persona).where(Persona.id == persona_id))
    role = (await _roles(session, actor, [persona])).get(persona_id) if persona else None
    if persona is None or (role is None and not actor.is_admin):
        raise NotFound(f"persona {persona_id} does not exist")
    return PersonaView(persona, role)


async def require_role(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                       needed: Role, doing: str) -> PersonaView:
    """The persona when the actor's role is at least ``needed`` (administrators always);
    404 when they cannot see it, 403 when they can but may not do this."""
    view = await get_persona(session, actor, persona_id)
    if not actor.is_admin and _RANK[view.role] < _RANK[needed]:
        who = "owners" if needed == "owner" else "owners and editors"
        raise Forbidden(f"only the persona's {who} may {doing}; you are a {view.role}")
    return view


async def _flush_email(session: AsyncSession) -> None:
    # Other tenants' personas are invisible under RLS: the unique index is the check.
    await flush_unique(session, EMAIL_INDEX, "another persona already uses that e-mail address")


async def check_providers(session: AsyncSession, **fields: str | Sequence[str] | None) -> None:
    """422 naming the field and the names when a provider field (``default_provider=``,
    ``fallback_providers=``, an agent's ``preferred_provider=``) names no registered LLM
    provider: a run prefers them (``runner._model_step``), so a typo would silently route
    nowhere.  Names match case-insensitively (unique so since migration 1260); a provider
    disabled is still registered."""
    wanted = {field: [value] if isinstance(value, str) else list(value or [])
              for field, value in fields.items()}
    names = {n.lower() for values in wanted.values() for n in values}
    if not names:
        return
    known: set[str] = set((await session.scalars(select(func.lower(LLMProviderRow.name)).where(
        func.lower(LLMProviderRow.name).in_(names)))).all())
    for field, values in wanted.items():
        unknown = sorted({n for n in values if n.lower() not in known})
        if unknown:
            raise Unprocessable(f"{field}: no LLM provider is named {unknown}")


async def create_persona(session: AsyncSession, actor: Principal,
                         body: PersonaCreate) -> PersonaView:
    owner = require_user(actor, "personas")
    await check_providers(session, default_provider=body.default_provider,
                          fallback_providers=body.fallback_providers)
    persona = Persona(
        owner_id=owner, name=body.name.strip(), description=body.description,
        system_prompt=body.system_prompt, default_provider=body.default_provider,
        default_model=body.default_model, fallback_providers=list(body.fallback_providers),
        email_address=_email(body.email_address), is_active=body.is_active)
    session.add(persona)
    await _flush_email(session)
    await session.refresh(persona)
    await record(session, "persona.create", user_id=owner, persona_id=persona.id,
                 resource_type="persona", resource_id=persona.id,
                 changes={"name": persona.name, "email_address": persona.email_address,
                          "default_provider": persona.default_provider,
                          "default_model": persona.default_model})
    return PersonaView(persona, "owner")


def _email(value: str | None) -> str | None:
    return address_key(value) if value else None


async def list_personas(
    session: AsyncSession, actor: Principal, *, is_active: bool | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[PersonaView], str | None]:
    """Newest first: the personas the actor owns or is a member of (administrators: all)."""
    stmt = select(Persona).where(visible_personas(actor))
    if is_active is not None:
        stmt = stmt.where(Persona.is_active.is_(is_active))
    rows, next_cursor = await newest_first(session, stmt, Persona.created_at, Persona.id,
                                           limit=limit, cursor=cursor)
    roles = await _roles(session, actor, rows)
    return [PersonaView(p, roles.get(p.id)) for p in rows], next_cursor


async def update_persona(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                         body: PersonaUpdate) -> PersonaView:
    view = await require_role(session, actor, persona_id, "editor", "change it")
    # Locked (and read again): a deletion at the same moment makes this a 404, not an
    # UPDATE that finds no row.
    persona = await one_or_404(
        session, select(Persona).where(Persona.id == persona_id)
        .execution_options(populate_existing=True), lock=True,
        missing=f"persona {persona_id} does not exist")
    values: dict[str, Any] = body.model_dump(exclude_unset=True)
    await check_providers(session, **{f: values[f] for f in ("default_provider",
                                                              "fallback_providers") if f in values})
    if "name" in values:
        values["name"] = values["name"].strip()
    if "email_address" in values:
        values["email_address"] = _email(values["email_address"])
    if values.get("email_agent_id") is not None:
        bound = await session.scalar(select(Agent.persona_id).where(
            Agent.id == values["email_agent_id"]))
        if bound != persona.id:
            raise Unprocessable(f"email_agent_id: agent {values['email_agent_id']} is not an "
                                "agent of this persona")
    changed: dict[str, Any] = {}
    for field, value in values.items():
        before = getattr(persona, field)
        if before == value:
            continue
        setattr(persona, field, value)
        changed[field] = "changed" if field in _TEXT_FIELDS else {
            "before": _plain(before), "after": _plain(value)}
    if changed:
        await _flush_email(session)
        await session.refresh(persona)
        await record(session, "persona.update", user_id=actor.user_id, persona_id=persona.id,
                     resource_type="persona", resource_id=persona.id, changes=changed)
    return PersonaView(persona, view.role)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID | datetime) else value


async def hold_persona(session: AsyncSession, persona_id: uuid.UUID) -> None:
    """Hold the persona (``FOR KEY SHARE``, taken after its role check) until the row about
    to point at it is stored: a deletion of the persona then waits, or went first and
    this is a 404.  Without it, a row written after the deletion committed was refused by
    row-level security (the policies read the persona): a 403 blaming the caller's rights
    (invitations, tool grants)."""
    await one_or_404(session, select(Persona.id).where(Persona.id == persona_id)
                     .with_for_update(read=True, key_share=True),
                     missing=f"persona {persona_id} does not exist")


async def delete_persona(session: AsyncSession, actor: Principal, persona_id: uuid.UUID) -> None:
    """Delete a persona with its members, secrets, agents and mail (ON DELETE CASCADE);
    its runs stay, unbound."""
    view = await require_role(session, actor, persona_id, "owner", "delete it")
    # Its agents locked before the persona: a run being started holds its agent's key,
    # then its persona's (the run's foreign keys, in that order), so the other order
    # deadlocked (a 503 for every run started meanwhile).  Now a start either commits
    # first or waits and finds its agent gone (404).
    agents = list((await session.scalars(
        select(Agent.id).where(Agent.persona_id == persona_id).order_by(Agent.id)
        .with_for_update())).all())
    # Locked: a second deletion at once waits, then finds it gone (404, one record).
    await one_or_404(session, select(Persona.id).where(Persona.id == persona_id), lock=True,
                     missing=f"persona {persona_id} does not exist")
    await session.delete(view.persona)
    await session.flush()
    await record(session, "persona.delete", user_id=actor.user_id, persona_id=persona_id,
                 resource_type="persona", resource_id=persona_id,
                 changes={"name": view.persona.name,
                          "agents_deleted": [str(a) for a in agents]})


# --- members ----------------------------------------------------------------------------


async def list_members(session: AsyncSession, actor: Principal,
                       persona_id: uuid.UUID) -> list[MemberView]:
    """The persona's members, oldest first (its owner is ``owner_id``, not a member)."""
    await get_persona(session, actor, persona_id)
    members = (await session.scalars(
        select(PersonaMember).where(PersonaMember.persona_id == persona_id)
        .order_by(PersonaMember.created_at, PersonaMember.id))).all()
    names = await _usernames(session, actor, persona_id)
    return [MemberView(m, names.get(m.user_id)) for m in members]


async def _usernames(session: AsyncSession, actor: Principal,
                     persona_id: uuid.UUID) -> dict[uuid.UUID, str]:
    if actor.is_admin:  # every account is theirs to see (and system work has no scope)
        stmt = select(User.id, User.username).where(or_(
            User.id.in_(select(PersonaMember.user_id).where(
                PersonaMember.persona_id == persona_id)),
            User.id == select(Persona.owner_id).where(Persona.id == persona_id)
            .scalar_subquery()))
    else:
        # SECURITY DEFINER (migration 0600): members see one another's usernames, which
        # the users policy would hide.
        stmt = select(text("user_id"), text("username")).select_from(
            text("roost_persona_usernames(:p)")).params(p=persona_id)
    rows = (await session.execute(stmt)).tuples().all()
    return {uuid.UUID(str(user_id)): str(name) for user_id, name in rows}


async def _lookup_user(session: AsyncSession, ref: str) -> uuid.UUID:
    return await lookup_user_id(session, ref, what="e-mail")


async def _username(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                    user_id: uuid.UUID) -> str | None:
    return (await _usernames(session, actor, persona_id)).get(user_id)


async def add_member(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                     body: MemberAdd) -> MemberView | InvitationView:
    """A site administrator (or the operator) adds the member: a :class:`MemberView`.  A
    persona's owner invites them: a pending :class:`InvitationView` (the same one when
    they are invited already, unchanged), which becomes a membership when they accept.
    409 when they own the persona or are a member already."""
    view = await require_role(session, actor, persona_id, "owner", "manage its members")
    await hold_persona(session, persona_id)
    user_id = await _lookup_user(session, body.user)
    if user_id == view.persona.owner_id:
        raise Conflict("that user owns the persona already")
    if not actor.is_admin:
        if view.persona.owner_id != actor.user_id:
            await _hold_own_membership(session, actor, persona_id)
        return await _invite(session, actor, persona_id, user_id, body.role)
    member = PersonaMember(persona_id=persona_id, user_id=user_id, role=body.role)
    session.add(member)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict("that user is already a member of the persona") from None
    await session.refresh(member)
    # An invitation still pending is answered by the membership itself.
    await session.execute(delete(PersonaInvitation).where(
        PersonaInvitation.persona_id == persona_id, PersonaInvitation.user_id == user_id))
    await record(session, "persona.member.add", user_id=actor.user_id, persona_id=persona_id,
                 resource_type="persona", resource_id=persona_id,
                 changes={"member": str(user_id), "role": body.role})
    return MemberView(member, await _username(session, actor, persona_id, user_id))


# --- invitations ------------------------------------------------------------------------


async def _pending(session: AsyncSession, persona_id: uuid.UUID,
                   user_id: uuid.UUID) -> PersonaInvitation | None:
    return await session.scalar(select(PersonaInvitation).where(
        PersonaInvitation.persona_id == persona_id, PersonaInvitation.user_id == user_id))


async def _hold_own_membership(session: AsyncSession, actor: Principal,
                               persona_id: uuid.UUID) -> None:
    """A co-owner (a member with role ``owner``) invites only while they are one: their
    membership is share-locked until the invitation commits, so removing or demoting them
    meanwhile waits, then withdraws it (:func:`_withdraw_invitations_of`)."""
    role = await session.scalar(select(PersonaMember.role).where(
        PersonaMember.persona_id == persona_id, PersonaMember.user_id == actor.user_id)
        .with_for_update(read=True).execution_options(populate_existing=True))
    if role != "owner":
        raise Forbidden("only the persona's owners may manage its members; you are no "
                        "longer one")


async def _withdraw_invitations_of(session: AsyncSession, actor: Principal,
                                   member: PersonaMember, reason: str) -> None:
    """A co-owner removed, leaving or demoted no longer answers for the invitations they
    sent: they are withdrawn (nobody becomes an owner on the word of someone the owners
    removed).  Called while ``member`` is still an owner, so row-level security lets the
    deletion through for someone leaving; the row is locked first, so an invitation they
    are sending at that moment commits before (and is withdrawn) or fails after."""
    await session.execute(select(PersonaMember.id).where(PersonaMember.id == member.id)
                          .with_for_update())
    gone = await session.execute(
        delete(PersonaInvitation).where(PersonaInvitation.persona_id == member.persona_id,
                                        PersonaInvitation.invited_by == member.user_id)
        .returning(PersonaInvitation.id).execution_options(synchronize_session=False))
    dropped = [str(i) for i in gone.scalars().all()]
    if dropped:
        await record(session, "persona.invitations_withdrawn", user_id=actor.user_id,
                     persona_id=member.persona_id, resource_type="persona",
                     resource_id=member.persona_id,
                     changes={"invited_by": str(member.user_id), "invitations": dropped,
                              "reason": reason})


async def _invite(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                  user_id: uuid.UUID, role: Role) -> InvitationView:
    # The caller owns the persona: its members are theirs to see.
    member = await session.scalar(select(PersonaMember.id).where(
        PersonaMember.persona_id == persona_id, PersonaMember.user_id == user_id))
    if member is not None:
        raise Conflict("that user is already a member of the persona")
    pending = await _pending(session, persona_id, user_id)
    if pending is not None:
        return (await _named(session, [pending]))[0]
    invitation_id = await session.scalar(
        pg_insert(PersonaInvitation)
        .values(persona_id=persona_id, user_id=user_id, role=role, invited_by=actor.user_id)
        .on_conflict_do_nothing(index_elements=["persona_id", "user_id"])
        .returning(PersonaInvitation.id))
    if invitation_id is None:
        # Invited at the same moment by another request (this statement waited for it to
        # commit): that invitation.
        pending = await _pending(session, persona_id, user_id)
        if pending is None:
            raise Conflict("the persona or that account changed meanwhile: try again")
        return (await _named(session, [pending]))[0]
    invitation = await session.get_one(PersonaInvitation, invitation_id)
    await record(session, "persona.member_invited", user_id=actor.user_id,
                 persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                 changes={"member": str(user_id), "role": role, "invitation": str(invitation.id)})
    return (await _named(session, [invitation]))[0]


async def _named(session: AsyncSession,
                 rows: Sequence[PersonaInvitation]) -> list[InvitationView]:
    """``rows`` with the persona's name and the inviter's username (through
    ``roost_persona_invitation_names``: an invitee may not read the persona or the
    inviter before joining) and the invitee's username as far as the users policy shows
    it to the caller (themself, people sharing a group with them, administrators'
    everyone): inviting someone by e-mail does not tell their username."""
    if not rows:
        return []
    names = {
        uuid.UUID(str(row[0])): (row[1], row[2])
        for row in (await session.execute(
            text("SELECT id, persona_name, invited_by_username "
                 "FROM roost_persona_invitation_names(CAST(:ids AS uuid[]))"),
            {"ids": [r.id for r in rows]})).tuples().all()
    }
    usernames = dict((await session.execute(
        select(User.id, User.username).where(User.id.in_({r.user_id for r in rows}))
    )).tuples().all())
    out = []
    for r in rows:
        persona_name, inviter = names.get(r.id, (None, None))
        out.append(InvitationView(r.id, r.persona_id, persona_name, r.user_id,
                                  usernames.get(r.user_id), cast(Role, r.role), r.invited_by,
                                  inviter, r.created_at))
    return out


async def my_invitations(
    session: AsyncSession, actor: Principal, *, limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[InvitationView], str | None]:
    """The caller's pending invitations to join personas, newest first."""
    me = require_user(actor, "persona invitations")
    rows, next_cursor = await pending_invitations(
        session, PersonaInvitation, PersonaInvitation.user_id, me, limit=limit, cursor=cursor)
    return await _named(session, rows), next_cursor


async def persona_invitations(
    session: AsyncSession, actor: Principal, persona_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[InvitationView], str | None]:
    """A persona's pending invitations, newest first (its owners, site administrators)."""
    await require_role(session, actor, persona_id, "owner", "manage its members")
    rows, next_cursor = await pending_invitations(
        session, PersonaInvitation, PersonaInvitation.persona_id, persona_id, limit=limit, cursor=cursor)
    return await _named(session, rows), next_cursor


async def accept_invitation(session: AsyncSession, actor: Principal,
                            invitation_id: uuid.UUID) -> MemberView:
    """Join the persona with the invited role; the invitation is gone."""
    me = require_user(actor, "persona invitations")
    invitation = await my_invitation(session, PersonaInvitation, me, invitation_id)
    persona_id, role = invitation.persona_id, invitation.role
    member = PersonaMember(persona_id=persona_id, user_id=me, role=role)
    # Withdrawn meanwhile (revoked, declined in another tab): nothing stands.
    await join_as_invited(session, member, "persona")
    await take_invitation(session, invitation)
    await session.refresh(member)
    await record(session, "persona.invitation_accepted", user_id=me, persona_id=persona_id,
                 resource_type="persona", resource_id=persona_id,
                 changes={"member": str(me), "role": role, "invitation": str(invitation_id)})
    return MemberView(member, await _username(session, actor, persona_id, me))


async def decline_invitation(session: AsyncSession, actor: Principal,
                             invitation_id: uuid.UUID) -> None:
    me = require_user(actor, "persona invitations")
    invitation = await my_invitation(session, PersonaInvitation, me, invitation_id)
    persona_id = invitation.persona_id
    await take_invitation(session, invitation)
    await record(session, "persona.invitation_declined", user_id=me, persona_id=persona_id,
                 resource_type="persona", resource_id=persona_id,
                 changes={"member": str(me), "invitation": str(invitation_id)})


async def revoke_invitation(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                            invitation_id: uuid.UUID) -> None:
    """A persona's owner (or a site administrator) withdraws a pending invitation."""
    await require_role(session, actor, persona_id, "owner", "manage its members")
    invitation = await session.scalar(select(PersonaInvitation).where(
        PersonaInvitation.id == invitation_id, PersonaInvitation.persona_id == persona_id))
    if invitation is None:
        raise NotFound("no such invitation")
    member = invitation.user_id
    await take_invitation(session, invitation)
    await record(session, "persona.invitation_revoked", user_id=actor.user_id,
                 persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                 changes={"member": str(member), "invitation": str(invitation_id)})


async def _member(session: AsyncSession, persona: Persona, user_id: uuid.UUID, owner: str, *,
                  lock: bool = False) -> PersonaMember:
    """The membership (``lock``: FOR UPDATE, read again: a removal or the persona's
    deletion at the same moment makes this a 404, not an UPDATE finding no row); for the
    persona's owner (``owner_id``), who is no member (ownership does not move), a 409
    saying ``owner``."""
    if user_id == persona.owner_id:
        raise Conflict(owner)
    stmt = select(PersonaMember).where(PersonaMember.persona_id == persona.id,
                                       PersonaMember.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = await session.scalar(stmt)
    if row is None:
        raise NotFound(f"user {user_id} is not a member of the persona")
    return row


async def set_member_role(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                          user_id: uuid.UUID, role: Role) -> MemberView:
    view = await require_role(session, actor, persona_id, "owner", "manage its members")
    member = await _member(session, view.persona, user_id,
                           "the persona's owner (owner_id) has no member role to change: "
                           "ownership does not move", lock=True)
    before = member.role
    if before == "owner" and role != "owner":
        await _withdraw_invitations_of(session, actor, member, "their owner role was taken")
    if before != role:
        member.role = role
        await session.flush()
        await record(session, "persona.member.role", user_id=actor.user_id,
                     persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                     changes={"member": str(user_id), "before": before, "after": role})
    return MemberView(member, await _username(session, actor, persona_id, user_id))


async def remove_member(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                        user_id: uuid.UUID) -> None:
    """An owner removes anyone; any member may remove themself (leave)."""
    if user_id == actor.user_id:
        view = await get_persona(session, actor, persona_id)
    else:
        view = await require_role(session, actor, persona_id, "owner", "manage its members")
    # Not locked: row-level security lets a member delete their own row, not lock it.
    member = await _member(
        session, view.persona, user_id,
        "the persona's owner cannot leave it; delete it instead" if user_id == actor.user_id
        else "the persona's owner (owner_id) cannot be removed: ownership does not move")
    if member.role == "owner":
        await _withdraw_invitations_of(
            session, actor, member,
            "they left the persona" if user_id == actor.user_id else "they were removed")
    # Removed by another request meanwhile (this statement waited for it): one record.
    gone = await session.scalar(delete(PersonaMember).where(PersonaMember.id == member.id)
                                .returning(PersonaMember.id)
                                .execution_options(synchronize_session=False))
    if gone is None:
        raise NotFound(f"user {user_id} is not a member of the persona")
    await record(session, "persona.member.remove", user_id=actor.user_id,
                 persona_id=persona_id, resource_type="persona", resource_id=persona_id,
                 changes={"member": str(user_id), "role": member.role,
                          "left": user_id == actor.user_id})
