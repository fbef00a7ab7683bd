"""HTTP routes of the memory API: ``/api/v1/memories``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query, Response, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.memory import service
from roost.memory.schemas import (
    ForgetIn,
    ForgetOut,
    HistoryOut,
    MemoryCreate,
    MemoryOut,
    MemoryType,
    MemoryUpdate,
    ScopeIn,
)
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1/memories", tags=["memory"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=MemoryOut,
             summary="Remember a fact in a scope (yours, or narrowed to a persona, agent or chat)")
async def add_memory(body: MemoryCreate, principal: CurrentPrincipal, db: DbSession) -> MemoryOut:
    scope = await service.resolve_scope(db, principal, body)
    return MemoryOut.model_validate(await service.add_memory(db, principal, scope, body))


@router.get("", response_model=Page[MemoryOut],
            summary="Memories, newest first: true now, or at a point in time (as_of)")
async def list_memories(
    principal: CurrentPrincipal, db: DbSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
    exact: Annotated[bool, Query(description="Only this scope, not narrower ones")] = False,
    memory_type: MemoryType | None = None,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(active|archived)$")] = "active",
    as_of: Annotated[datetime | None, Query(description="What was true at this time")] = None,
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


@router.get("/{memory_id}", response_model=MemoryOut, summary="One memory")
async def get_memory(memory_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> MemoryOut:
    return MemoryOut.model_validate(await service.get_memory(db, principal, memory_id))


@router.get("/{memory_id}/history", response_model=list[HistoryOut],
            summary="How a memory came to be what it is (add, updates, invalidation)")
async def memory_history(memory_id: uuid.UUID, principal: CurrentPrincipal,
                         db: DbSession) -> list[HistoryOut]:
    return [HistoryOut.model_validate(h) for h in await service.history(db, principal, memory_id)]


@router.patch("/{memory_id}", response_model=MemoryOut, summary="Change a memory (history kept)")
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, principal: CurrentPrincipal,
                        db: DbSession) -> MemoryOut:
    return MemoryOut.model_validate(await service.update_memory(db, principal, memory_id, body))


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a memory")
async def delete_memory(memory_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> Response:
    await service.delete_memory(db, principal, memory_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
