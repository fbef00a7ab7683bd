"""Agents and long-term memory (roost.memory): the ``memory_search`` and ``memory_add``
built-in tools, the memories recalled into a run's context, and learning from a run.

A run's memory scope is its user, narrowed to the agent's persona when it has one: what an
agent remembers for a user under one persona is not what another persona sees, and a user's
own (persona-less) memories are visible to every agent they run (recall includes narrower
scopes of the user; see roost.memory.recall)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from pydantic import Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Run
from roost.db.engine import Database
from roost.errors import Forbidden, Unprocessable
from roost.identity.tenancy import apply_principal
from roost.inputs import StrictInput, is_blank, parse_tool_arguments, strip_invisible
from roost.knowledge.config import KnowledgeConfig
from roost.memory import learning, recall, service
from roost.memory.schemas import Content, MemoryCreate, MemoryType
from roost.principal import Principal

MEMORY_SEARCH_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000701")
MEMORY_ADD_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000702")
RECALL_TEXT_CHARS: Final = 500  # of each memory, in a tool result or the context

BuiltinTool = Callable[[Database, Principal, dict[str, Any], uuid.UUID | None],
                       Awaitable[dict[str, Any]]]


class _SearchArgs(StrictInput):
    # As _AddArgs: a blank query is the tool's own "query" refused, not the search
    # endpoint's "q must not be empty" (a parameter the model never saw).
    refuse_nul = True

    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=5, ge=1, le=20)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("must not be blank")
        return value


class _AddArgs(StrictInput):
    # A model's arguments: a NUL or blank content is a clear failed step (the model is
    # told why), not an error of storing it.
    refuse_nul = True

    content: Content  # stripped, then counted, as the API's (a trailing newline is fine)
    memory_type: MemoryType = "fact"
    confidence: float = Field(default=0.8, ge=0, le=1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("must not be blank")
        return value


def run_scope(run: Run) -> service.Scope:
    return service.Scope(user_id=run.user_id, persona_id=run.persona_id)


def recalled_lines(found: list[recall.Recalled]) -> list[dict[str, Any]]:
    return [{"id": str(r.memory.id), "content": r.memory.content[:RECALL_TEXT_CHARS],
             "memory_type": r.memory.memory_type, "confidence": float(r.memory.confidence),
             "valid_from": r.memory.valid_from.isoformat(), "score": round(r.score, 6)}
            for r in found]


def recall_query(text: str) -> str:
    """What of ``text`` (a run's input, a tool's query) recall searches for: its first
    ``recall.MAX_QUERY_CHARS`` characters once invisible ones around it are stripped, so a
    longer one still recalls (not a 422), and one that starts with a run of zero-width
    characters searches its words, not the first thousand of them."""
    return strip_invisible(text)[:recall.MAX_QUERY_CHARS]


async def remember(session: AsyncSession, actor: Principal, run: Run, query: str, *,
                   knowledge: KnowledgeConfig | None, k: int) -> list[dict[str, Any]]:
    """The ``k`` memories of the run's scope that best fit ``query`` (the run's input)."""
    found = await recall.search(session, actor, run_scope(run), recall_query(query),
                                embedder=recall.usable_embedder(knowledge=knowledge), k=k)
    return recalled_lines(found)


async def learn_from_run(session: AsyncSession, actor: Principal, run: Run, *,
                         cipher: Any = None) -> uuid.UUID:
    """Queue learning the run's exchange (input and answer) into its scope; idempotent.
    The scope is the run's user's memory (and their model calls): only they, or an
    administrator, ask for it (403 for a persona member who sees the run)."""
    if not actor.is_admin and actor.user_id != run.user_id:
        raise Forbidden("only the user who started this run may have Roost learn from it")
    if not run.output:
        raise Unprocessable("the run has no answer to learn from yet")
    text = learning.clip_text(f"user: {run.input}\n\nassistant: {run.output}")
    return await learning.enqueue_learn(session, actor, run_scope(run), source_type="run",
                                        source_id=run.id, text=text, cipher=cipher)


async def _run_of(session: AsyncSession, run_id: uuid.UUID | None) -> Run:
    if run_id is None:
        raise Unprocessable("memory tools are for agent runs: the memory is the run's user's")
    run = await session.scalar(select(Run).where(Run.id == run_id))
    if run is None:
        raise Unprocessable("the calling run is gone")
    if run.kind == "agent" and run.agent_id is None:
        # Its agent (and maybe its persona) was deleted while it ran: the run's scope now
        # reads as the user's whole memory, other personas' memories included.
        raise Unprocessable("the run's agent was deleted: its memory is no longer reachable")
    return run


def builtin_tools(knowledge: KnowledgeConfig | None, app_role: str) -> dict[uuid.UUID, BuiltinTool]:
    """The memory built-ins by ``tools`` row id (the tools domain runs them as hosted)."""

    async def search(database: Database, actor: Principal, arguments: dict[str, Any],
                     run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_SearchArgs, "memory_search", arguments)
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            run = await _run_of(session, run_id)
            found = await remember(session, actor, run, args.query, knowledge=knowledge, k=args.k)
        return {"memories": found}

    async def add(database: Database, actor: Principal, arguments: dict[str, Any],
                  run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_AddArgs, "memory_add", arguments)
        embedder = recall.usable_embedder(knowledge=knowledge)
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            run = await _run_of(session, run_id)
            memory = await service.add_memory(
                session, actor, run_scope(run),
                MemoryCreate(content=args.content, memory_type=args.memory_type,
                             confidence=args.confidence),
                source_type="agent", source_id=run.agent_id, run_id=run.id)
            if embedder is not None:
                await recall.embed_memories(session, [memory], embedder)
            return {"id": str(memory.id), "content": memory.content, "stored": True}

    return {MEMORY_SEARCH_ID: search, MEMORY_ADD_ID: add}
