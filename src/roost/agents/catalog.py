"""Finding the agents (and personas) a principal may use: their own, their personas'
(as a member), and public ones; and managing agents: create, list, change, delete.

Visibility is checked here (``visible_agents``) and by row-level security (the second
wall).  Changing or deleting an agent takes its owner, an owner or editor of its persona,
or an administrator: anyone else who can see it (a public agent, a persona's viewer) gets
403.  Tools and documents an agent names are checked when it is configured: each must
exist and be visible to whoever configures it (unknown: 422 naming it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import and_, case, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.grants import grants_of
from roost.agents.models import Agent, Persona, PersonaMember, Run
from roost.agents.personas import check_providers, get_persona, require_role, role_of
from roost.agents.schemas import STORED, AgentConfig, AgentCreate, AgentOut, AgentUpdate
from roost.agents.secrets import missing_references
from roost.audit.service import record
from roost.billing import credits, limits
from roost.db.engine import Database
from roost.db.errors import flush_unique
from roost.db.lookup import id_starts_with, one_or_404
from roost.db.transaction import local_settings
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.common import require_user
from roost.identity.tenancy import apply_principal, clear_principal
from roost.knowledge.models import Document
from roost.knowledge.service import visible_to as documents_visible_to
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.tools import registry
from roost.tools.models import McpServer, PersonaTool, Tool
from roost.workspace.service import require_project

SLUG_INDEX: Final = "uq_agents_owner_slug"
_TEXT_FIELDS: Final = ("description", "system_prompt")


class AgentInactive(Conflict):
    title, type_slug = "Agent inactive", "agent-inactive"


async def get_agent(session: AsyncSession, actor: Principal, agent_id: uuid.UUID) -> Agent:
    """An agent the actor can see (row-level security in the actor's scope), else 404."""
    agent = await session.scalar(select(Agent).where(Agent.id == agent_id,
                                                     visible_agents(actor)))
    if agent is None:
        raise NotFound(f"agent {agent_id} does not exist")
    return agent


async def find_agent_by_slug(session: AsyncSession, actor: Principal, slug: str) -> Agent:
    """``slug`` resolved for the actor: their own agent first, then one of their personas',
    then the oldest public one."""
    agent = await session.scalar(
        select(Agent).where(Agent.slug == slug, offered_agents(actor))
        .order_by(slug_rank(actor), Agent.created_at).limit(1))
    if agent is None:
        raise NotFound(f"no agent with slug {slug!r}")
    return agent


async def find_agent(session: AsyncSession, actor: Principal, ref: str, *,
                     id_start: bool = False) -> Agent:
    """``ref`` ("an agent's slug or id": the CLI, workflows' agent nodes, debate files)
    resolved for the actor.  A full UUID is an id and only an id: no slug (a stranger's
    public agent's above all) takes over the agent it names.  Any other ref is the slug of
    one of the actor's own agents, then of their personas'; then, with ``id_start``, a
    unique start of the id of an agent they can see; a public agent's slug comes last, so
    that it never hides the actor's own agent behind a start of its id."""
    try:
        agent_id = uuid.UUID(ref)
    except ValueError:
        pass
    else:
        return await get_agent(session, actor, agent_id)
    rank = slug_rank(actor)
    row = (await session.execute(
        select(Agent, rank).where(Agent.slug == ref, visible_agents(actor))
        .order_by(rank, Agent.created_at).limit(1))).first()
    found: Agent | None = None
    if row is not None:
        found = row[0]
        if row[1] < 2:  # their own or their personas'
            return found
    if id_start:
        rows = (await session.scalars(select(Agent).where(
            visible_agents(actor), id_starts_with(Agent.id, ref),  # never "%" or "_"
        ).limit(3))).all()
        if len(rows) > 1:
            raise BadRequest(f"{ref!r} starts several agent ids; give more characters")
        if rows:
            return rows[0]
    if found is not None:  # a public agent's slug, last
        return found
    raise NotFound(f"no agent you can see has the slug {ref!r}"
                   + (" or an id starting with it" if id_start else ""))


def require_active(agent: Agent) -> Agent:
    if not agent.is_active:
        raise AgentInactive(f"agent {agent.slug!r} is inactive; activate it to run it")
    return agent


async def require_runnable(session: AsyncSession, actor: Principal, agent: Agent) -> Agent:
    """``agent`` (as the actor sees it), active and runnable by the actor: a persona's
    agent that is not public is run by the persona's members only, not by its creator
    once removed (403).  Every way to run an agent checks this before it stores anything:
    a run, a chat turn, a debate seat, ``/mcp``, ``/v1``."""
    require_active(agent)
    if agent.persona_id is not None and not actor.is_admin and not agent.is_public and (
            actor.user_id is None
            or await role_of(session, agent.persona_id, actor.user_id) is None):
        raise Forbidden("this agent is a persona's: only the persona's members may run it")
    return agent


async def persona_of(session: AsyncSession, agent: Agent) -> Persona | None:
    if agent.persona_id is None:
        return None
    return await session.get(Persona, agent.persona_id)


# --- managing agents ----------------------------------------------------------------------


def visible_agents(actor: Principal) -> Any:
    """SQL condition: agents ``actor`` may see and run (the RLS policy's rule, migration
    1110): their own of no persona, public ones, and those of personas they own or are a
    member of (a persona's agent is the persona's: its creator once removed sees it no
    more)."""
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    return offered_agents(actor)


def offered_agents(actor: Principal) -> Any:
    """SQL condition: the agents a slug names for ``actor`` (``agent:<slug>`` on /v1, /mcp's
    ``agent__<slug>`` tools, chat sessions): their own, their personas', public ones, for
    an administrator too (who may see and manage every agent by id, but whose slugs and
    tool list are not every user's private agents)."""
    if actor.user_id is None:
        return false()
    return or_(_own_agent(actor), Agent.is_public, _persona_agent(actor))


def slug_rank(actor: Principal) -> Any:
    """SQL ordering key of the agents sharing a slug, for the actor: their own agent (0),
    then one of their personas' (1), then a public one (2): a persona's agent that is
    public too still ranks as the persona's, before a stranger's public one."""
    return case((_own_agent(actor), 0), (_persona_agent(actor), 1), else_=2)


def _own_agent(actor: Principal) -> Any:
    return and_(Agent.user_id == actor.user_id, Agent.persona_id.is_(None))


def _persona_agent(actor: Principal) -> Any:
    """An agent of a persona the actor owns or is a member of."""
    member_of = select(PersonaMember.persona_id).where(PersonaMember.user_id == actor.user_id)
    owned = select(Persona.id).where(Persona.owner_id == actor.user_id)
    return or_(Agent.persona_id.in_(member_of), Agent.persona_id.in_(owned))


def agent_out(agent: Agent) -> AgentOut:
    out = AgentOut.model_validate(agent)
    try:  # every limit as a run would apply it
        out.config = AgentConfig.model_validate(agent.config or {}, context=STORED).model_dump(
            mode="json")
    except ValidationError:  # stored before a limit changed: shown as stored
        pass
    return out


async def can_edit(session: AsyncSession, actor: Principal, agent: Agent) -> bool:
    """Its owner changes an agent of no persona; a persona's agent is the persona's: its
    owners and editors change it, its creator only while one of them (a member removed or
    made a viewer keeps no agent of the persona to change or run as it)."""
    if actor.is_admin:
        return True
    if agent.persona_id is None:
        return actor.user_id is not None and agent.user_id == actor.user_id
    view = await get_persona(session, actor, agent.persona_id)
    return view.role in ("owner", "editor")


async def _editable(session: AsyncSession, actor: Principal, agent_id: uuid.UUID,
                    doing: str) -> Agent:
    agent = await get_agent(session, actor, agent_id)
    try:
        allowed = await can_edit(session, actor, agent)
    except NotFound:  # public, of a persona the actor is not a member of
        allowed = False
    if not allowed:
        raise Forbidden(f"only the agent's owner or, for an agent of a persona, an owner "
                        f"or editor of the persona may {doing}")
    return agent


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def split_tool_refs(refs: Iterable[str]) -> tuple[list[uuid.UUID], list[str]]:
    """An agent's ``tool_permissions`` (tool ids or names) as (ids, names)."""
    ids = [uuid.UUID(r) for r in refs if _is_uuid(r)]
    return ids, [r for r in refs if not _is_uuid(r)]


async def check_tools(session: AsyncSession, actor: Principal, refs: list[str],
                      persona_id: uuid.UUID | None = None, *, hint: str = "") -> list[str]:
    """``refs`` (tool ids or names, duplicates dropped) when each names a tool the actor
    can see, or (by id) one granted to the agent's persona; 422 naming those that do not
    (``hint`` ends its message)."""
    # An id's spellings (upper case, no dashes, braces, urn:uuid:) are one tool: kept once.
    wanted = list(dict.fromkeys(str(uuid.UUID(r)) if _is_uuid(r) else r
                                for r in (r.strip() for r in refs)))
    ids = {r: uuid.UUID(r) for r in wanted if _is_uuid(r)}
    names = [r for r in wanted if r not in ids]
    if not wanted:
        return []
    rows = (await session.execute(select(Tool.id, Tool.name).where(
        registry.visible(actor), or_(Tool.id.in_(list(ids.values())), Tool.name.in_(names)),
    ))).tuples().all()
    found_ids, found_names = {r[0] for r in rows}, {r[1] for r in rows}
    if persona_id is not None and ids:  # granted to the persona (members see its grants)
        found_ids |= set((await session.scalars(select(PersonaTool.tool_id).where(
            PersonaTool.persona_id == persona_id, PersonaTool.is_enabled))).all())
    unknown = [r for r in wanted
               if (ids[r] not in found_ids if r in ids else r not in found_names)]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise Unprocessable(f"tool_permissions: no tool you can use is called {shown} (see "
                            f"GET /api/v1/tools){hint}")
    return [str(ids[r]) if r in ids else r for r in wanted]


async def check_secret_references(system: Database, persona_id: uuid.UUID | None,
                                  owner: uuid.UUID, tool_refs: list[str]) -> None:
    """422 when the MCP servers of these tools name persona secrets (``${secret:...}`` in
    their env or headers) that the agent's persona does not hold, or it has no persona.

    Read as the system, among the tools the agent's runs are offered as the runner
    resolves them: global ones, the owner's own and those granted to the persona (a
    member's private tool the editor's own scope does not show); not another user's tool
    that happens to share a name (an administrator's scope shows every user's)."""
    ids, names = split_tool_refs(tool_refs)
    if not tool_refs:
        return
    async with system.transaction() as session:
        granted = list(await grants_of(session, persona_id)) if persona_id is not None else []
        configs: Sequence[dict[str, Any] | None] = (await session.scalars(
            select(McpServer.config).join(Tool, Tool.mcp_server_id == McpServer.id)
            .where(or_(Tool.id.in_(ids), Tool.name.in_(names)),
                   or_(Tool.user_id.is_(None), Tool.user_id == owner, Tool.id.in_(granted))))
        ).all()
        labels = list(dict.fromkeys(ref for config in configs
                                    for ref in (config or {}).get("secret_refs", [])))
        if not labels:
            return
        if persona_id is None:
            raise Unprocessable(f"tool_permissions: these tools' servers use persona secrets "
                                f"({', '.join(labels)}): bind the agent to a persona that "
                                "holds them")
        missing = await missing_references(session, persona_id, labels)
    if missing:
        raise Unprocessable(f"tool_permissions: these tools' servers use the secret(s) "
                            f"{', '.join(missing)}, which the persona does not hold; set them "
                            f"with PUT /api/v1/personas/{persona_id}/secrets")


async def check_documents(session: AsyncSession, actor: Principal,
                          document_ids: list[uuid.UUID]) -> list[str]:
    """The ids (duplicates dropped) when each is a document the actor can see; else 422."""
    wanted = list(dict.fromkeys(document_ids))
    if not wanted:
        return []
    found = set((await session.scalars(select(Document.id).where(
        Document.id.in_(wanted), documents_visible_to(actor)))).all())
    unknown = [str(d) for d in wanted if d not in found]
    if unknown:
        raise Unprocessable(f"document_ids: no document you can see has the id "
                            f"{', '.join(unknown[:10])}")
    return [str(d) for d in wanted]


async def _flush_slug(session: AsyncSession, slug: str) -> None:
    await flush_unique(session, SLUG_INDEX, f"you already have an agent with the slug {slug!r}")


async def _slug_free(session: AsyncSession, owner: uuid.UUID, slug: str,
                     agent_id: uuid.UUID | None = None) -> None:
    clash = await session.scalar(select(Agent.id).where(Agent.user_id == owner,
                                                        Agent.slug == slug))
    if clash is not None and clash != agent_id:
        raise Conflict(f"you already have an agent with the slug {slug!r}")


def _config(config: AgentConfig) -> dict[str, Any]:
    # Only what was set: defaults are filled in when a run starts (runs.effective_config).
    return config.model_dump(mode="json", exclude_unset=True)


async def _check_agent_limit(session: AsyncSession, owner: uuid.UUID) -> None:
    """The plan's max_agents (403 naming it), for a metered user."""
    payer = await credits.payer_for(session, owner)
    if payer is None or payer.limits.get("max_agents") is None:
        return
    await limits.lock_count(session, payer, "max_agents")
    count = await limits.owned_count(session, payer, "agents")
    await limits.check_count(session, owner, "max_agents", count, payer=payer)


async def create_agent(session: AsyncSession, actor: Principal, body: AgentCreate, *,
                       system: Database) -> Agent:
    """``system``: the database, for the checks read as the system (secret references)."""
    owner = require_user(actor, "agents")
    if body.persona_id is not None:
        await require_role(session, actor, body.persona_id, "editor", "bind agents to it")
    await _slug_free(session, owner, body.slug)
    await require_project(session, actor, body.project_id)  # another user's: 404
    await _check_agent_limit(session, owner)
    await check_providers(session, preferred_provider=body.preferred_provider)
    agent = Agent(
        user_id=owner, persona_id=body.persona_id, project_id=body.project_id,
        name=body.name.strip(), slug=body.slug,
        description=body.description, avatar_url=body.avatar_url,
        system_prompt=body.system_prompt, preferred_provider=body.preferred_provider,
        preferred_model=body.preferred_model,
        tool_permissions=await check_tools(session, actor, body.tool_permissions,
                                           body.persona_id),
        document_ids=await check_documents(session, actor, body.document_ids),
        config=_config(body.config), is_active=body.is_active, is_public=body.is_public)
    await check_secret_references(system, agent.persona_id, owner, agent.tool_permissions)
    session.add(agent)
    await _flush_slug(session, body.slug)
    await session.refresh(agent)
    await record(session, "agent.create", user_id=owner, persona_id=agent.persona_id,
                 resource_type="agent", resource_id=agent.id,
                 changes={"name": agent.name, "slug": agent.slug,
                          "persona_id": str(agent.persona_id) if agent.persona_id else None,
                          "project_id": str(agent.project_id) if agent.project_id else None,
                          "is_public": agent.is_public,
                          "tool_permissions": agent.tool_permissions,
                          "document_ids": agent.document_ids})
    return agent


async def list_agents(
    session: AsyncSession, actor: Principal, *, persona_id: uuid.UUID | None = None,
    is_active: bool | None = None, is_public: bool | None = None, mine: bool | None = None,
    project_id: uuid.UUID | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Agent], str | None]:
    """Newest first: the actor's agents, their personas' and public ones."""
    stmt = where_equal(select(Agent).where(visible_agents(actor)),
                       (Agent.persona_id, persona_id), (Agent.project_id, project_id))
    if is_active is not None:
        stmt = stmt.where(Agent.is_active.is_(is_active))
    if is_public is not None:
        stmt = stmt.where(Agent.is_public.is_(is_public))
    if mine is not None:
        stmt = stmt.where((Agent.user_id == actor.user_id) if mine else
                          (Agent.user_id != actor.user_id))
    return await newest_first(session, stmt, Agent.created_at, Agent.id, limit=limit,
                              cursor=cursor)


async def update_agent(session: AsyncSession, actor: Principal, agent_id: uuid.UUID,
                       body: AgentUpdate, *, system: Database) -> Agent:
    """``system``: the database, for the checks read as the system (secret references)."""
    agent = await _editable(session, actor, agent_id, "change it")
    # Locked: a change waiting on the agent's deletion finds it gone (404, not a failed
    # UPDATE of nothing); one waiting on another change builds on it.
    await one_or_404(session, select(Agent.id).where(Agent.id == agent_id), lock=True,
                     missing=f"agent {agent_id} does not exist")
    await session.refresh(agent)
    given = body.model_fields_set
    values: dict[str, Any] = {f: getattr(body, f) for f in given if f != "config"}
    if body.config is not None:
        values["config"] = _config(body.config)
    if "name" in values:
        values["name"] = values["name"].strip()
    if "persona_id" in values and values["persona_id"] != agent.persona_id:
        if not actor.is_admin and agent.user_id != actor.user_id:
            raise Forbidden("only the agent's owner may bind it to another persona or unbind it")
        if values["persona_id"] is not None:
            await require_role(session, actor, values["persona_id"], "editor",
                               "bind agents to it")
    if "slug" in values:
        await _slug_free(session, agent.user_id, values["slug"], agent.id)
    if "preferred_provider" in values:
        await check_providers(session, preferred_provider=values["preferred_provider"])
    if "project_id" in values and values["project_id"] != agent.project_id:
        # Filing an agent is its owner's, as binding it is: an editor of its persona would
        # otherwise list the owner's agent among their own project's things.
        if not actor.is_admin and agent.user_id != actor.user_id:
            raise Forbidden("only the agent's owner may move it to another project")
        await require_project(session, actor, values["project_id"], owner_id=agent.user_id)
    if "tool_permissions" in values:
        values["tool_permissions"] = await check_tools(
            session, actor, values["tool_permissions"], values.get("persona_id", agent.persona_id))
    elif "persona_id" in values and values["persona_id"] != agent.persona_id:
        # The agent's tools again, with the new persona's grants: one only the old persona
        # granted would stay listed and silently drop out of every run.
        values["tool_permissions"] = await check_tools(
            session, actor, list(agent.tool_permissions), values["persona_id"],
            hint="; the agent's tools must be usable with its new persona: send "
                 "tool_permissions without them in the same change")
    if "document_ids" in values:
        values["document_ids"] = await check_documents(session, actor, values["document_ids"])
    if "tool_permissions" in values or "persona_id" in values:
        await check_secret_references(
            system, values.get("persona_id", agent.persona_id), agent.user_id,
            values.get("tool_permissions", agent.tool_permissions))
    changed: dict[str, Any] = {}
    for field, value in values.items():
        before = getattr(agent, field)
        if before == value:
            continue
        setattr(agent, field, value)
        changed[field] = "changed" if field in _TEXT_FIELDS else {
            "before": _plain(before), "after": _plain(value)}
    if changed:
        await _flush_slug(session, agent.slug)
        await session.refresh(agent)
        await record(session, "agent.update", user_id=actor.user_id, persona_id=agent.persona_id,
                     resource_type="agent", resource_id=agent.id, changes=changed)
    if "is_active" in changed and not agent.is_active:
        await _fail_unstarted_runs(session, actor, agent.id)
    return agent


async def _fail_unstarted_runs(session: AsyncSession, actor: Principal,
                               agent_id: uuid.UUID) -> None:
    """Deactivating is "stop running this agent": its runs not started yet fail now, in
    the change's transaction (turned on again, the agent does not run them after all);
    a run under way finishes, or is cancelled by its user.  The runner refuses a run of
    an inactive agent too (a run queued as this commits)."""
    # Imported here: runs imports this module (require_runnable).
    from roost.agents.runs import AGENT_INACTIVE, fail_open_run

    scope = dict(local_settings(session))
    if scope:  # every user's runs of it (a persona's members', strangers' of a public one)
        await clear_principal(session)
    unstarted = (await session.scalars(select(Run.id).where(
        Run.agent_id == agent_id, Run.status == "pending", Run.started_at.is_(None))
        .order_by(Run.id))).all()
    for run_id in unstarted:
        await fail_open_run(session, run_id, AGENT_INACTIVE, unstarted=True,
                            metadata={"agent_deactivated": str(agent_id)})
    if scope:
        await apply_principal(session, actor, app_role=scope.get("role") or None)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


async def delete_agent(session: AsyncSession, actor: Principal, agent_id: uuid.UUID) -> None:
    """Delete an agent; its runs stay (``agent_id`` becomes NULL), a persona whose mail it
    answered stores mail only."""
    agent = await _editable(session, actor, agent_id, "delete it")
    # Locked: a second deletion at once waits, then finds it gone (404, one record).
    await one_or_404(session, select(Agent.id).where(Agent.id == agent_id), lock=True,
                     missing=f"agent {agent_id} does not exist")
    await session.delete(agent)
    await session.flush()
    await record(session, "agent.delete", user_id=actor.user_id, persona_id=agent.persona_id,
                 resource_type="agent", resource_id=agent_id,
                 changes={"name": agent.name, "slug": agent.slug})
