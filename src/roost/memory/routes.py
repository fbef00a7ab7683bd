"""HTTP routes of the memory API: ``/api/v1/memories``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import Depends, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import utcnow
from roost.errors import RoostError
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep
from roost.http.reads import ReadSession, replica_fallback, wrote_in_read
from roost.http.routing import RoostRouter
from roost.inputs import IsoDatetime
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.embeddings import Embedder, EmbedderUnavailable
from roost.llm import routing
from roost.llm.deps import GatewayDep
from roost.memory import graphq, learning, recall, service
from roost.memory.models import Memory
from roost.memory.schemas import (
    SENT_NAME_CHARS,
    EdgeOut,
    EntityHistoryOut,
    EntityOut,
    EntitySummaryOut,
    ForgetIn,
    ForgetOut,
    HistoryEdgeOut,
    HistoryOut,
    LearnIn,
    LearnOut,
    LearnTaskOut,
    MemoryCreate,
    MemoryOut,
    MemoryType,
    MemoryUpdate,
    NeighbourOut,
    NeighboursOut,
    PathOut,
    RecalledOut,
    ScopeIn,
    SearchOut,
)
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1/memories", tags=["memory"])
log = structlog.get_logger(__name__)


async def get_memory_embedder(request: Request, settings: SettingsDep) -> Embedder | None:
    """The knowledge embedder if it can run here (None: memory works without vectors).
    The knowledge config is built once and kept on the app, as the knowledge routes do."""
    cfg: KnowledgeConfig | None = getattr(request.app.state, "knowledge_config", None)
    if cfg is None:
        try:
            cfg = KnowledgeConfig.from_settings(settings)
        except EmbedderUnavailable:
            return None
        request.app.state.knowledge_config = cfg
    return recall.usable_embedder(settings, knowledge=cfg)


EmbedderDep = Annotated[Embedder | None, Depends(get_memory_embedder)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=MemoryOut,
             summary="Remember a fact in a scope (yours, or narrowed to a persona, agent or chat)")
async def add_memory(body: MemoryCreate, principal: CurrentPrincipal, db: DbSession,
                     embedder: EmbedderDep) -> MemoryOut:
    scope = await service.resolve_scope(db, principal, body)
    memory = await service.add_memory(db, principal, scope, body)
    await _embed(db, memory, embedder)
    return MemoryOut.model_validate(memory)


async def _embed(db: AsyncSession, memory: Memory, embedder: Embedder | None) -> None:
    """Embed a new or changed memory now; without a working embedder it is stored without
    a vector (the memory.embed job catches up), never refused."""
    if embedder is None or memory.embedding_model is not None:
        return
    try:
        await recall.embed_memories(db, [memory], embedder)
    except RoostError as exc:
        log.warning("memory.embed_failed", memory_id=str(memory.id), error=exc.detail)


@router.get("", response_model=Page[MemoryOut],
            summary="Memories, newest first: true now, or at a point in time (as_of)")
@replica_fallback
async def list_memories(
    principal: CurrentPrincipal, db: ReadSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
    exact: Annotated[bool, Query(description="Only this scope, not narrower ones")] = False,
    memory_type: MemoryType | None = None,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(active|archived)$")] = "active",
    as_of: Annotated[IsoDatetime | None, Query(description="What was true at this time")] = None,
    include_invalid: Annotated[bool, Query(description="Also facts that stopped being true")] = False,
) -> Page[MemoryOut]:
    scope = await service.resolve_scope(db, principal, ScopeIn(
        user_id=user_id, persona_id=persona_id, agent_id=agent_id, session_id=session_id))
    rows, next_cursor = await service.list_memories(
        db, principal, scope, exact=exact, memory_type=memory_type, status=status_filter,
        as_of=as_of, include_invalid=include_invalid, limit=limit, cursor=cursor)
    return Page(items=[MemoryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/forget", response_model=ForgetOut,
             summary="Delete every memory of one scope (no other scope's rows are touched)")
async def forget(body: ForgetIn, principal: CurrentPrincipal, db: DbSession) -> ForgetOut:
    return ForgetOut(deleted=await service.forget(db, principal, body))


@router.post("/learn", status_code=status.HTTP_202_ACCEPTED, response_model=LearnOut,
             summary="Learn facts from text or a chat session: extraction and reconciliation "
             "run on the task queue (memory.learn), one job per source")
async def learn(body: LearnIn, principal: CurrentPrincipal, db: DbSession,
                gateway: GatewayDep) -> LearnOut:
    scope = await service.resolve_scope(db, principal, body)
    await routing.resolve_route(db, gateway, body.model)  # 409 no provider, 404 unknown model
    if body.chat_session_id is not None:
        source_type, source_id = "chat_session", body.chat_session_id
        text = await learning.chat_transcript(db, gateway, principal, scope, body.chat_session_id)
    else:
        source_type, source_id, text = "manual", None, body.text or ""
    task_id = await learning.enqueue_learn(db, principal, scope, source_type=source_type,
                                           source_id=source_id, text=text, cipher=gateway.cipher,
                                           model=body.model)
    return LearnOut(task_id=task_id, source_type=source_type, source_id=source_id)


@router.get("/learn/{task_id}", response_model=LearnTaskOut,
            summary="A learn job: its status, what it stored, or why it failed")
async def learn_task(task_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> LearnTaskOut:
    job = await learning.learn_task(db, principal, task_id)
    return LearnTaskOut(task_id=job.id, status=str(job.status), error=job.error_message,
                        result=job.result, created_at=job.created_at, completed_at=job.completed_at)


@router.get("/search", response_model=SearchOut,
            summary="Recall: the memories that best answer a query (meaning, words, graph)")
async def search_memories(
    request: Request, principal: CurrentPrincipal, db: DbSession, settings: SettingsDep,
    embedder: EmbedderDep,
    q: Annotated[str, Query(min_length=1, max_length=recall.MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=recall.MAX_K)] = 10,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
    as_of: Annotated[IsoDatetime | None, Query(description="What was true at this time")] = None,
) -> SearchOut:
    scope = await service.resolve_scope(db, principal, ScopeIn(
        user_id=user_id, persona_id=persona_id, agent_id=agent_id, session_id=session_id))
    hits = await recall.search(db, principal, scope, q, embedder=embedder, k=k, as_of=as_of,
                               settings=settings)
    if hits:  # their recall counts were written: the next listing reads them back
        wrote_in_read(request)
    return SearchOut(
        model=embedder.model_name if embedder is not None else None,
        items=[RecalledOut(memory=MemoryOut.model_validate(h.memory), score=h.score,
                           vector=h.vector, text=h.text, graph=h.graph) for h in hits])


@router.get("/graph/entities", response_model=list[EntitySummaryOut],
            summary="Entities of your memory graph (name contains q), most connected first")
async def graph_entities(
    principal: CurrentPrincipal, db: DbSession,
    q: Annotated[str | None, Query(max_length=SENT_NAME_CHARS)] = None,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[EntitySummaryOut]:
    found = await graphq.find_entities(db, principal, q, user_id=user_id, persona_id=persona_id,
                                       limit=limit)
    return [EntitySummaryOut(**_entity(s.entity).model_dump(), current_relations=s.current_relations,
                             all_relations=s.all_relations) for s in found]


@router.get("/graph/entities/{entity_id}/neighbours", response_model=NeighboursOut,
            summary="Entities within depth relations of one (now, or as_of)")
async def graph_neighbours(
    entity_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    depth: Annotated[int, Query(ge=1, le=graphq.MAX_DEPTH)] = 1,
    as_of: Annotated[IsoDatetime | None, Query(description="The graph at this time")] = None,
    limit: Annotated[int, Query(ge=1, le=graphq.MAX_NEIGHBOURS)] = graphq.DEFAULT_NEIGHBOURS,
) -> NeighboursOut:
    [entity] = await graphq.resolve_entities(db, principal, entity_id)
    found = await graphq.neighbours(db, principal, entity_id, as_of=as_of, depth=depth,
                                    limit=limit)
    return NeighboursOut(entity=_entity(entity), items=[
        NeighbourOut(entity=_entity(n.entity), depth=n.depth,
                     edges=[_edge(e, as_of) for e in n.edges]) for n in found])


@router.get("/graph/paths", response_model=list[PathOut],
            summary="Paths of at most max_hops relations between two entities, shortest first")
async def graph_paths(
    principal: CurrentPrincipal, db: DbSession,
    source: Annotated[str, Query(min_length=1, max_length=SENT_NAME_CHARS,
                                 description="Name or id")],
    target: Annotated[str, Query(min_length=1, max_length=SENT_NAME_CHARS,
                                 description="Name or id")],
    max_hops: Annotated[int, Query(ge=1, le=graphq.MAX_HOPS)] = 3,
    as_of: Annotated[IsoDatetime | None, Query(description="The graph at this time")] = None,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=graphq.MAX_PATHS)] = graphq.DEFAULT_PATHS,
) -> list[PathOut]:
    found = await graphq.paths(db, principal, source, target, max_hops=max_hops, as_of=as_of,
                               user_id=user_id, persona_id=persona_id, limit=limit)
    return [PathOut(hops=p.hops, entities=[_entity(e) for e in p.entities],
                    edges=[_edge(e, as_of) for e in p.edges]) for p in found]


@router.get("/graph/entities/{entity_id}/history", response_model=EntityHistoryOut,
            summary="The relations an entity has had, current and past, with their validity, "
            "oldest first (a page)")
async def graph_history(entity_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> EntityHistoryOut:
    [entity], edges, next_cursor = await graphq.entity_history(db, principal, entity_id,
                                                               limit=limit, cursor=cursor)
    now = utcnow()
    return EntityHistoryOut(entity=_entity(entity), next_cursor=next_cursor, items=[
        HistoryEdgeOut(**_edge(e, None, now).model_dump(), memory_content=e.memory_content)
        for e in edges])


def _entity(entity: graphq.EntityRef) -> EntityOut:
    return EntityOut.model_validate(entity)


def _edge(edge: graphq.Edge, as_of: datetime | None, now: datetime | None = None) -> EdgeOut:
    out = EdgeOut.model_validate(edge)
    out.current = edge.current_at(as_of or now or utcnow())
    return out


@router.get("/{memory_id:uuid}", response_model=MemoryOut, summary="One memory")
async def get_memory(memory_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> MemoryOut:
    return MemoryOut.model_validate(await service.get_memory(db, principal, memory_id))


@router.get("/{memory_id:uuid}/history", response_model=Page[HistoryOut],
            summary="How a memory came to be what it is (add, updates, invalidation), "
            "oldest first")
async def memory_history(memory_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                         limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[HistoryOut]:
    rows, next_cursor = await service.history(db, principal, memory_id, limit=limit, cursor=cursor)
    return Page(items=[HistoryOut.model_validate(h) for h in rows], next_cursor=next_cursor)


@router.patch("/{memory_id:uuid}", response_model=MemoryOut, summary="Change a memory (history kept)")
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, principal: CurrentPrincipal,
                        db: DbSession, embedder: EmbedderDep) -> MemoryOut:
    memory = await service.update_memory(db, principal, memory_id, body)
    await _embed(db, memory, embedder)
    return MemoryOut.model_validate(memory)


@router.delete("/{memory_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a memory")
async def delete_memory(memory_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> Response:
    await service.delete_memory(db, principal, memory_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
