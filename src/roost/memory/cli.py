"""``roost memory add|search|ls|forget|graph|embed|decay``: long-term memory from the
command line.

Every command but ``embed`` and ``decay`` acts for one user, ``--user`` (username or
e-mail; default: the root user), in that user's row-level-security scope, through the
same services as the API.  A scope is narrowed with ``--persona`` (name or id) and
``--agent`` (slug or id).  ``embed`` and ``decay`` are the operator's upkeep (every
user): the ``memory.embed`` and ``memory.decay`` jobs, run now.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Final, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from rich.console import Console
from rich.text import Text
from sqlalchemy import and_, case, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from roost.clitools import (
    MAX_DAYS,
    MAX_LIST,
    fail,
    id_table,
    print_table,
    printable,
    resolve_id,
    when,
    with_database,
)
from roost.config import Settings, get_settings
from roost.context import RequestContext, set_context
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.db.lookup import first_unique, full_id, id_starts_with
from roost.errors import NotFound, RoostError
from roost.identity.accounts import find_user
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.inputs import read_as_utc
from roost.memory import graphq, recall, service
from roost.memory.models import Memory
from roost.memory.schemas import EntityIn, ForgetIn, MemoryCreate, RelationshipIn, ScopeIn
from roost.principal import Principal

console = Console()
T = TypeVar("T")
PREVIEW_CHARS: Final = 200

memory_app = typer.Typer(help="Long-term memory: add, search, list, forget, the entity graph.",
                         no_args_is_help=True)



def _system(fn: Callable[[Database, Settings], Awaitable[T]]) -> T:
    settings = get_settings()

    async def go(database: Database) -> T:
        set_context(RequestContext(request_id=f"cli-{uuid.uuid4().hex[:12]}",
                                   user_agent="roost-cli"))
        return await fn(database, settings)

    try:
        return with_database(go, settings)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc


def _invalid(exc: ValidationError) -> typer.Exit:
    # Field and reason only: pydantic's own message would quote the value.
    reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                        for e in exc.errors())
    return fail("Invalid input", reasons)



def _short(value: str | None, limit: int = PREVIEW_CHARS) -> str:
    """Stored text on one line, shortened, safe to print (control characters escaped)."""
    flat = " ".join((value or "").split())
    return printable(flat if len(flat) <= limit else flat[:limit - 1] + "…")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _as_of(value: str | None) -> datetime | None:
    """``--as-of`` as the API reads ``as_of``: ISO 8601, UTC without an offset, and a
    moment of years 1-9999 in UTC (``0001-01-01T00:00:00+14:00`` is in year 0)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail("Invalid --as-of", f"{value!r} is not an ISO 8601 date or time") from None
    try:
        return read_as_utc(moment)
    except PydanticCustomError as exc:
        raise fail("Invalid --as-of", exc.message()) from None


# --- scope --------------------------------------------------------------------------------


# The tables a scope names, as the user's session reads them (row-level security: the
# personas they belong to; their own, their personas' and public agents).
_PERSONAS = table("personas", column("id"), column("name"), column("owner_id"))
_MEMBERS = table("persona_members", column("persona_id"), column("user_id"))
_AGENTS = table("agents", column("id"), column("slug"), column("user_id"),
                column("persona_id"), column("created_at"))


async def _persona_in(session: AsyncSession, persona: str) -> uuid.UUID:
    """As ``roost personas`` reads it: a full id, else the exact name, else a unique start
    of an id (a persona named like another's id prefix still names itself)."""
    full = full_id(persona)
    return await first_unique(
        session, select(_PERSONAS.c.id),
        ((_PERSONAS.c.id == full,) if full is not None else ())
        + (_PERSONAS.c.name == persona, id_starts_with(_PERSONAS.c.id, persona)),
        persona, "persona")


async def _agent_in(session: AsyncSession, actor: Principal, agent: str) -> uuid.UUID:
    """As ``roost agents`` reads it (``roost.agents.catalog.find_agent``, which this
    layer, below agents, cannot call): a full id is an id; else the slug of the user's own
    agent, then of one of their personas' (the oldest); else a unique start of an id;
    a public agent's slug last (a stranger's never hides the user's own)."""
    full = full_id(agent)
    if full is not None:
        return await first_unique(session, select(_AGENTS.c.id), (_AGENTS.c.id == full,),
                                  agent, "agent")
    personas = select(_MEMBERS.c.persona_id).where(_MEMBERS.c.user_id == actor.user_id) \
        .union(select(_PERSONAS.c.id).where(_PERSONAS.c.owner_id == actor.user_id))
    rank = case((and_(_AGENTS.c.user_id == actor.user_id, _AGENTS.c.persona_id.is_(None)), 0),
                (_AGENTS.c.persona_id.in_(personas), 1), else_=2)
    found = (await session.execute(select(_AGENTS.c.id, rank).where(_AGENTS.c.slug == agent)
                                   .order_by(rank, _AGENTS.c.created_at).limit(1))).first()
    if found is not None and found[1] < 2:
        return uuid.UUID(str(found[0]))
    try:
        return await first_unique(session, select(_AGENTS.c.id),
                                  (id_starts_with(_AGENTS.c.id, agent),), agent, "agent")
    except NotFound:
        if found is None:
            raise
        return uuid.UUID(str(found[0]))  # a public agent's slug


async def _scope_in(session: AsyncSession, actor: Principal, persona: str | None,
                    agent: str | None) -> ScopeIn:
    """Persona and agent by name, slug or id (prefix), among those the user can see, read
    as ``roost personas`` and ``roost agents`` read them."""
    return ScopeIn(persona_id=await _persona_in(session, persona) if persona else None,
                   agent_id=await _agent_in(session, actor, agent) if agent else None)


# --- commands -------------------------------------------------------------------------------


def _entity(raw: str) -> EntityIn:
    name, _, kind = raw.rpartition(":") if ":" in raw else (raw, "", "thing")
    return EntityIn(name=name.strip(), type=(kind.strip() or "thing"))


def _relation(raw: str) -> RelationshipIn:
    parts = [p.strip() for p in raw.split(":")]
    if len(parts) != 3 or not all(parts):
        raise fail("Invalid --relation", f"{raw!r} is not SOURCE:RELATION:TARGET")
    return RelationshipIn(source=parts[0], relation=parts[1], target=parts[2])


PersonaOpt = Annotated[str | None, typer.Option(
    "--persona", help="Narrow to this persona (name or id).")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Narrow to this agent (slug or id).")]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="What was true at this time (ISO 8601, e.g. 2026-01-31 or 2026-01-31T12:00Z).")]


@memory_app.command("add")
def add_command(
    content: Annotated[str, typer.Argument(help="The fact to remember.")],
    user: UserOpt = None, persona: PersonaOpt = None, agent: AgentOpt = None,
    memory_type: Annotated[str, typer.Option(
        "--type", help="fact, preference, event, relationship, skill, goal or other.")] = "fact",
    confidence: Annotated[float, typer.Option(min=0, max=1, help="How sure, 0 to 1.")] = 0.8,
    entity: Annotated[list[str] | None, typer.Option(
        "--entity", "-e", help="An entity the fact is about, NAME or NAME:TYPE (repeatable).")] = None,
    relation: Annotated[list[str] | None, typer.Option(
        "--relation", "-r", help="SOURCE:RELATION:TARGET, e.g. Ada:lives_in:Paris (repeatable).")] = None,
) -> None:
    """Remember a fact (embedded now when an embedder can run here)."""
    try:
        entities = [_entity(e) for e in entity or []]
        relations = [_relation(r) for r in relation or []]
    except ValidationError as exc:
        raise _invalid(exc) from None

    async def go(env: Env) -> Memory:
        async with env.scoped() as session:
            given = await _scope_in(session, env.principal, persona, agent)
            try:
                body = MemoryCreate(content=content, memory_type=memory_type,  # type: ignore[arg-type]
                                    confidence=confidence, entities=entities,
                                    relationships=relations, persona_id=given.persona_id,
                                    agent_id=given.agent_id)
            except ValidationError as exc:
                raise _invalid(exc) from None
            scope = await service.resolve_scope(session, env.principal, body)
            memory = await service.add_memory(session, env.principal, scope, body)
            embedder = recall.usable_embedder(env.settings)
            if embedder is not None:
                try:
                    await recall.embed_memories(session, [memory], embedder)
                except RoostError:
                    pass  # stored without a vector; `roost memory embed` catches up
            return memory

    memory = _run(user, go)
    console.print(f"Remembered {memory.id}" + (" (embedded)" if memory.embedding_model else ""),
                  markup=False)


@memory_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="What to recall.")],
    user: UserOpt = None, persona: PersonaOpt = None, agent: AgentOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=recall.MAX_K, help="How many memories.")
                 ] = 10,
    as_of: AsOfOpt = None,
) -> None:
    """Recall the memories that best answer QUERY (meaning, words and the entity graph)."""
    moment = _as_of(as_of)

    async def go(env: Env) -> list[recall.Recalled]:
        async with env.scoped() as session:
            scope = await service.resolve_scope(session, env.principal,
                                                await _scope_in(session, env.principal, persona, agent))
            return await recall.search(session, env.principal, scope, query,
                                       embedder=recall.usable_embedder(env.settings), k=k,
                                       as_of=moment, settings=env.settings)

    hits = _run(user, go)
    table = id_table("score", "vector", "text", "graph", "memory", "id", wrap=("memory",))
    for hit in hits:
        table.add_row(_num(hit.score), _num(hit.vector), _num(hit.text), _num(hit.graph),
                      Text(_short(hit.memory.content)), str(hit.memory.id))
    print_table(console, table)
    if not hits:
        console.print("Nothing recalled.")


@memory_app.command("ls")
def ls_command(
    user: UserOpt = None, persona: PersonaOpt = None, agent: AgentOpt = None,
    every: Annotated[bool, typer.Option("--all", help="Also facts that stopped being true.")] = False,
    archived: Annotated[bool, typer.Option("--archived", help="Archived memories instead.")] = False,
    as_of: AsOfOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST,
                                       help="At most this many (newest first).")] = 100,
) -> None:
    """List memories, newest first: what is true now (or --as-of a time)."""
    moment = _as_of(as_of)

    async def go(env: Env) -> list[Memory]:
        async with env.scoped() as session:
            scope = await service.resolve_scope(session, env.principal,
                                                await _scope_in(session, env.principal, persona, agent))
            rows, _ = await service.list_memories(
                session, env.principal, scope, status="archived" if archived else "active",
                as_of=moment, include_invalid=every, limit=limit)
            return rows

    rows = _run(user, go)
    table = id_table("id", "type", "conf.", "valid from", "valid until", "recalled", "content",
                     wrap=("content",))
    for m in rows:
        table.add_row(str(m.id), m.memory_type, f"{float(m.confidence):.2f}",
                      when(m.valid_from, seconds=True), when(m.valid_to, seconds=True),
                      str(m.access_count), Text(_short(m.content)))
    print_table(console, table)


@memory_app.command("forget")
def forget_command(
    memory_id: Annotated[str | None, typer.Argument(
        help="The memory to delete (id or a unique start of one).")] = None,
    user: UserOpt = None, persona: PersonaOpt = None, agent: AgentOpt = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Delete every memory of the scope (--persona/--agent narrow it).")] = False,
    include_narrower: Annotated[bool, typer.Option(
        "--include-narrower", help="With --all: also the scope's narrower memories.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --all.")] = False,
) -> None:
    """Delete one memory, or with --all every memory of one scope (no other scope's)."""
    if (memory_id is None) == (not every):
        raise fail("Invalid input", "name one memory id, or pass --all for a whole scope")
    if every and not yes:
        raise fail("Not confirmed", "--all deletes every memory of the scope; add --yes")

    async def go(env: Env) -> int:
        async with env.scoped() as session:
            if memory_id is not None:
                found = await resolve_id(session, Memory.id, memory_id, "memory")
                await service.delete_memory(session, env.principal, found)
                return 1
            given = await _scope_in(session, env.principal, persona, agent)
            return await service.forget(session, env.principal, ForgetIn(
                persona_id=given.persona_id, agent_id=given.agent_id,
                include_narrower=include_narrower))

    deleted = _run(user, go)
    console.print(f"Forgot {deleted} {'memory' if deleted == 1 else 'memories'}.")


@memory_app.command("graph")
def graph_command(
    entity: Annotated[str, typer.Argument(help="The entity (name or id).")],
    user: UserOpt = None, persona: PersonaOpt = None,
    depth: Annotated[int, typer.Option(
        min=0, max=graphq.MAX_DEPTH,
        help="Also list the entities within this many relations now (0: none).")] = 0,
) -> None:
    """An entity's relations over time, current and past, with their validity."""
    async def go(env: Env) -> tuple[list[graphq.EntityRef], list[graphq.Edge],
                                    list[graphq.Neighbour]]:
        async with env.scoped() as session:
            given = await _scope_in(session, env.principal, persona, None)
            found, edges, _ = await graphq.entity_history(session, env.principal, entity,
                                                          persona_id=given.persona_id)
            near = (await graphq.neighbours(session, env.principal, entity, depth=depth,
                                            persona_id=given.persona_id)
                    if depth > 0 else [])
            return found, edges, near

    found, edges, near = _run(user, go)
    now = utcnow()
    current = sum(1 for e in edges if e.current_at(now))
    names = ", ".join(f"{e.name} ({e.entity_type})" for e in found)
    console.print(Text(printable(f"{names}: {current} current, {len(edges) - current} past "
                                 f"relation{'' if len(edges) - current == 1 else 's'}")))
    table = id_table("relation", "valid from", "valid until", "state", "memory",
                     wrap=("relation", "memory"))
    for edge in edges:
        state = "[green]current[/green]" if edge.current_at(now) else (
            "[yellow]future[/yellow]" if edge.valid_from > now else "[dim]past[/dim]")
        table.add_row(Text(printable(f"{edge.source_name} --{edge.relation}--> {edge.target_name}")),
                      when(edge.valid_from, seconds=True), when(edge.valid_to, seconds=True), state,
                      Text(_short(edge.memory_content, 80)))
    print_table(console, table)
    if near:
        table = id_table("depth", "entity", "type", "via", wrap=("via",))
        for n in near:
            via = "; ".join(f"{e.source_name} --{e.relation}--> {e.target_name}" for e in n.edges)
            table.add_row(str(n.depth), Text(printable(n.entity.name)), Text(printable(n.entity.entity_type)),
                          Text(printable(via)))
        print_table(console, table)


@memory_app.command("embed")
def embed_command(
    user: Annotated[str | None, typer.Option(
        "--user", "-u", help="Only this user's memories (default: every user's).")] = None,
) -> None:
    """Embed the memories that have no vector of the configured model (memory.embed, now)."""
    async def go(database: Database, settings: Settings) -> recall.EmbedReport:
        embedder = recall.usable_embedder(settings)
        if embedder is None:
            raise NotFound("no embedder can run here (see ROOST_KNOWLEDGE_EMBEDDING_*)")
        user_id = None
        if user is not None:
            async with database.transaction() as session:
                found = await find_user(session, user)
            if found is None:
                raise NotFound(f"no user {user!r}")
            user_id = found.id
        return await recall.embed_missing(database, embedder, user_id=user_id)

    report = _system(go)
    console.print(f"Embedded {report.embedded} of {report.missing} memories with {report.model}.",
                  markup=False)


@memory_app.command("decay")
def decay_command(
    days: Annotated[int | None, typer.Option(
        min=1, max=MAX_DAYS, help="Archive memories not recalled for this many days "
             "(default: ROOST_MEMORY_ARCHIVE_AFTER_DAYS).")] = None,
) -> None:
    """Archive the memories not recalled or changed for long (memory.decay, now)."""
    from roost.memory.decay import archive_unaccessed

    async def go(database: Database, settings: Settings) -> tuple[int, int]:
        after = settings.memory_archive_after_days if days is None else days
        if after <= 0:
            return 0, 0
        report = await archive_unaccessed(database, days=after)
        return report.archived, after

    archived, after = _system(go)
    if not after:
        console.print("Decay is off (ROOST_MEMORY_ARCHIVE_AFTER_DAYS=0); nothing archived.")
        return
    console.print(f"Archived {archived} {'memory' if archived == 1 else 'memories'} "
                  f"not recalled for {after} days.")


def register(app: typer.Typer) -> None:
    """Add ``roost memory`` (``roost.domains`` calls this)."""
    from roost.memory.shards_cli import register_shards

    if not any(c.name == "shards" for c in memory_app.registered_commands):
        register_shards(memory_app)
    app.add_typer(memory_app, name="memory")
