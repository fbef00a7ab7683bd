"""HTTP routes: /api/v1/personas (members, secrets) and /api/v1/agents.  Runs of an
agent are in :mod:`roost.agents.run_routes`."""

from __future__ import annotations

import uuid
from typing import Annotated, cast

from fastapi import Query, Request, Response, status
from fastapi.responses import JSONResponse

from roost.agents import catalog, grants, personas, secrets
from roost.agents.schemas import (
    AgentCreate,
    AgentOut,
    AgentUpdate,
    MemberAdd,
    MemberRole,
    MemberUpdate,
    PersonaCreate,
    PersonaInvitationOut,
    PersonaMemberOut,
    PersonaOut,
    PersonaUpdate,
    SecretOut,
    SecretSet,
    SecretType,
    ToolGrantOut,
    ToolGrantSet,
)
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, get_database
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page
from roost.tools.deps import ToolsEnvDep

router = RoostRouter(prefix="/api/v1", tags=["agents"])


def _member_out(view: personas.MemberView) -> PersonaMemberOut:
    m = view.member
    return PersonaMemberOut(persona_id=m.persona_id, user_id=m.user_id, username=view.username,
                     role=cast(MemberRole, m.role), created_at=m.created_at)


def _invitation_out(i: personas.InvitationView) -> PersonaInvitationOut:
    return PersonaInvitationOut(
        id=i.id, persona_id=i.persona_id, persona_name=i.persona_name, user_id=i.user_id,
        username=i.username, role=i.role, invited_by=i.invited_by,
        invited_by_username=i.invited_by_username, created_at=i.created_at)


def _invitations_page(rows: list[personas.InvitationView],
                      next_cursor: str | None) -> Page[PersonaInvitationOut]:
    return Page[PersonaInvitationOut](items=[_invitation_out(i) for i in rows],
                                      next_cursor=next_cursor)


# --- personas -----------------------------------------------------------------------------


@router.post("/personas", status_code=status.HTTP_201_CREATED, response_model=PersonaOut,
             summary="Create a persona (you own it)")
async def create_persona(body: PersonaCreate, principal: CurrentPrincipal,
                         db: DbSession) -> PersonaOut:
    return personas.persona_out(await personas.create_persona(db, principal, body))


@router.get("/personas", response_model=Page[PersonaOut],
            summary="Personas you own or are a member of, newest first")
async def list_personas(
    principal: CurrentPrincipal, db: DbSession, is_active: bool | None = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[PersonaOut]:
    views, next_cursor = await personas.list_personas(db, principal, is_active=is_active,
                                                      limit=limit, cursor=cursor)
    return Page[PersonaOut](items=[personas.persona_out(v) for v in views],
                            next_cursor=next_cursor)


# Declared before /personas/{persona_id}: "invitations" is no persona id.
@router.get("/personas/invitations", response_model=Page[PersonaInvitationOut],
            summary="Your pending invitations to join personas, newest first")
async def my_invitations(principal: CurrentPrincipal, db: DbSession,
                         limit: Limit = DEFAULT_LIMIT,
                         cursor: Cursor = None) -> Page[PersonaInvitationOut]:
    return _invitations_page(*await personas.my_invitations(db, principal, limit=limit,
                                                            cursor=cursor))


@router.post("/personas/invitations/{invitation_id}/accept",
             status_code=status.HTTP_201_CREATED, response_model=PersonaMemberOut,
             summary="Accept an invitation: join the persona with the role it names")
async def accept_invitation(invitation_id: uuid.UUID, principal: CurrentPrincipal,
                            db: DbSession) -> PersonaMemberOut:
    return _member_out(await personas.accept_invitation(db, principal, invitation_id))


@router.post("/personas/invitations/{invitation_id}/decline",
             status_code=status.HTTP_204_NO_CONTENT,
             summary="Decline an invitation (it is gone)")
async def decline_invitation(invitation_id: uuid.UUID, principal: CurrentPrincipal,
                             db: DbSession) -> Response:
    await personas.decline_invitation(db, principal, invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/personas/{persona_id:uuid}", response_model=PersonaOut)
async def get_persona(persona_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> PersonaOut:
    return personas.persona_out(await personas.get_persona(db, principal, persona_id))


@router.patch("/personas/{persona_id:uuid}", response_model=PersonaOut,
              summary="Change a persona (owners and editors)")
async def update_persona(persona_id: uuid.UUID, body: PersonaUpdate,
                         principal: CurrentPrincipal, db: DbSession) -> PersonaOut:
    return personas.persona_out(await personas.update_persona(db, principal, persona_id, body))


@router.delete("/personas/{persona_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a persona with its members, secrets, agents and mail (owners)")
async def delete_persona(persona_id: uuid.UUID, principal: CurrentPrincipal,
                         db: DbSession) -> Response:
    await personas.delete_persona(db, principal, persona_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- members ------------------------------------------------------------------------------


@router.get("/personas/{persona_id:uuid}/members", response_model=list[PersonaMemberOut],
            summary="The persona's members (its owner is owner_id)")
async def list_members(persona_id: uuid.UUID, principal: CurrentPrincipal,
                       db: DbSession) -> list[PersonaMemberOut]:
    return [_member_out(v) for v in await personas.list_members(db, principal, persona_id)]


@router.post(
    "/personas/{persona_id:uuid}/members", status_code=status.HTTP_201_CREATED,
    response_model=PersonaMemberOut,
    responses={201: {"description": "Added (a site administrator or the operator token)"},
               202: {"model": PersonaInvitationOut,
                     "description": "Invited (a persona's owner): the person becomes a member "
                                    "when they accept; inviting them again answers the same "
                                    "pending invitation"}},
    summary="Add a member (site administrators) or invite someone (owners), by user id, "
            "username or e-mail")
async def add_member(persona_id: uuid.UUID, body: MemberAdd, principal: CurrentPrincipal,
                     db: DbSession) -> PersonaMemberOut | JSONResponse:
    added = await personas.add_member(db, principal, persona_id, body)
    if isinstance(added, personas.InvitationView):
        return JSONResponse(status_code=status.HTTP_202_ACCEPTED,
                            content=_invitation_out(added).model_dump(mode="json"))
    return _member_out(added)


@router.patch("/personas/{persona_id:uuid}/members/{user_id}", response_model=PersonaMemberOut,
              summary="Change a member's role (owners)")
async def set_member_role(persona_id: uuid.UUID, user_id: uuid.UUID, body: MemberUpdate,
                          principal: CurrentPrincipal, db: DbSession) -> PersonaMemberOut:
    return _member_out(await personas.set_member_role(db, principal, persona_id, user_id,
                                                      body.role))


@router.delete("/personas/{persona_id:uuid}/members/{user_id}",
               status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a member (owners), or leave (yourself)")
async def remove_member(persona_id: uuid.UUID, user_id: uuid.UUID,
                        principal: CurrentPrincipal, db: DbSession) -> Response:
    await personas.remove_member(db, principal, persona_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/personas/{persona_id:uuid}/invitations", response_model=Page[PersonaInvitationOut],
            summary="The persona's pending invitations, newest first (owners)")
async def list_persona_invitations(persona_id: uuid.UUID, principal: CurrentPrincipal,
                                   db: DbSession, limit: Limit = DEFAULT_LIMIT,
                                   cursor: Cursor = None) -> Page[PersonaInvitationOut]:
    return _invitations_page(*await personas.persona_invitations(db, principal, persona_id,
                                                                 limit=limit, cursor=cursor))


@router.delete("/personas/{persona_id:uuid}/invitations/{invitation_id}",
               status_code=status.HTTP_204_NO_CONTENT,
               summary="Revoke a pending invitation (owners)")
async def revoke_invitation(persona_id: uuid.UUID, invitation_id: uuid.UUID,
                            principal: CurrentPrincipal, db: DbSession) -> Response:
    await personas.revoke_invitation(db, principal, persona_id, invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- secrets ------------------------------------------------------------------------------


@router.get("/personas/{persona_id:uuid}/secrets", response_model=list[SecretOut],
            summary="The persona's secrets: types, names and times, never values "
                    "(owners and editors)")
async def list_secrets(
    persona_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    secret_type: Annotated[SecretType | None, Query()] = None,
) -> list[SecretOut]:
    rows = await secrets.list_secrets(db, principal, persona_id, secret_type=secret_type)
    return [SecretOut.model_validate(r) for r in rows]


@router.put("/personas/{persona_id:uuid}/secrets", response_model=SecretOut,
            summary="Set a secret (create or replace its value; owners and editors)")
async def set_secret(persona_id: uuid.UUID, body: SecretSet, principal: CurrentPrincipal,
                     db: DbSession, env: ToolsEnvDep) -> SecretOut:
    row, _created = await secrets.set_secret(db, principal, env.box, persona_id, body)
    return SecretOut.model_validate(row)


@router.delete("/personas/{persona_id:uuid}/secrets/{secret_id}",
               status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a secret (owners and editors)")
async def delete_secret(persona_id: uuid.UUID, secret_id: uuid.UUID,
                        principal: CurrentPrincipal, db: DbSession) -> Response:
    await secrets.delete_secret(db, principal, persona_id, secret_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- tools granted to a persona ------------------------------------------------------------


@router.get("/personas/{persona_id:uuid}/tools", response_model=list[ToolGrantOut],
            summary="Tools granted to the persona (members)")
async def list_tool_grants(persona_id: uuid.UUID, principal: CurrentPrincipal,
                           db: DbSession) -> list[ToolGrantOut]:
    return await grants.list_grants(db, principal, persona_id)


@router.put("/personas/{persona_id:uuid}/tools/{tool_id}", response_model=ToolGrantOut,
            summary="Grant the persona a tool you may use, with constraints (owners and "
                    "editors): its agents may then use it in any member's runs")
async def grant_tool(persona_id: uuid.UUID, tool_id: uuid.UUID, body: ToolGrantSet,
                     principal: CurrentPrincipal, db: DbSession) -> ToolGrantOut:
    return await grants.grant_tool(db, principal, persona_id, tool_id, body)


@router.delete("/personas/{persona_id:uuid}/tools/{tool_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Revoke the persona's grant of a tool (owners and editors)")
async def revoke_tool(persona_id: uuid.UUID, tool_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> Response:
    await grants.revoke_tool(db, principal, persona_id, tool_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- agents -------------------------------------------------------------------------------


@router.post("/agents", status_code=status.HTTP_201_CREATED, response_model=AgentOut,
             summary="Create an agent (you own it; optionally bound to a persona you edit)")
async def create_agent(body: AgentCreate, principal: CurrentPrincipal,
                       db: DbSession, request: Request) -> AgentOut:
    return catalog.agent_out(await catalog.create_agent(db, principal, body,
                                                         system=get_database(request)))


@router.get("/agents", response_model=Page[AgentOut],
            summary="Agents you can use: yours, your personas' and public ones, newest first")
async def list_agents(
    principal: CurrentPrincipal, db: DbSession, persona_id: uuid.UUID | None = None,
    is_active: bool | None = None, is_public: bool | None = None,
    mine: Annotated[bool | None, Query(description="true: only yours; false: only "
                                                   "others'")] = None,
    project_id: uuid.UUID | None = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[AgentOut]:
    rows, next_cursor = await catalog.list_agents(
        db, principal, persona_id=persona_id, is_active=is_active, is_public=is_public,
        mine=mine, project_id=project_id, limit=limit, cursor=cursor)
    return Page[AgentOut](items=[catalog.agent_out(a) for a in rows], next_cursor=next_cursor)


@router.get("/agents/{agent_id}", response_model=AgentOut)
async def get_agent(agent_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> AgentOut:
    return catalog.agent_out(await catalog.get_agent(db, principal, agent_id))


@router.patch("/agents/{agent_id}", response_model=AgentOut,
              summary="Change an agent (its owner, its persona's owners and editors)")
async def update_agent(agent_id: uuid.UUID, body: AgentUpdate, principal: CurrentPrincipal,
                       db: DbSession, request: Request) -> AgentOut:
    return catalog.agent_out(await catalog.update_agent(
        db, principal, agent_id, body, system=get_database(request)))


@router.delete("/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an agent (its runs stay)")
async def delete_agent(agent_id: uuid.UUID, principal: CurrentPrincipal,
                       db: DbSession) -> Response:
    await catalog.delete_agent(db, principal, agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
