"""Memories: add, list (now or at a point in time), get with history, update (history
kept), invalidate, delete, and forget a whole scope without touching any other.

Every function takes the request's session (row-level security scoped to the actor) and
the acting principal.  A scope is a user, optionally narrowed to a persona, an agent or a
chat session; each id is checked under the actor's row-level security, so another
tenant's id is a 404 like an unknown one.
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, Uuid, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow
from roost.errors import NotFound, Unprocessable
from roost.memory import graph
from roost.memory.models import Memory, MemoryHistory
from roost.memory.schemas import ForgetIn, MemoryCreate, MemoryUpdate, ScopeIn
from roost.pagination import DEFAULT_LIMIT, after_time_id, newest_first, page_of, time_id_cursor
from roost.principal import Principal

RESOURCE = "memory"


@dataclass(frozen=True)
class Scope:
    user_id: uuid.UUID
    persona_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

    def where(self, stmt: Select[Any], *, exact: bool = True) -> Select[Any]:
        """Rows of exactly this scope (``exact=False``: and the user's narrower ones)."""
        stmt = stmt.where(Memory.user_id == self.user_id)
        for column, value in ((Memory.persona_id, self.persona_id),
                              (Memory.agent_id, self.agent_id),
                              (Memory.session_id, self.session_id)):
            if value is not None:
                stmt = stmt.where(column == value)
            elif exact:
                stmt = stmt.where(column.is_(None))
        return stmt


# Existence under the actor's row-level security: a row they may not see is "no such".
# Each id must also be the scope's user's (an administrator sees every row, and a
# memory's scope must not reach another user's persona, agent or chat session): a
# persona they own or are a member of, an agent they own or of such a persona (not
# another user's public agent: deleting it would delete the memories with it), their
# own chat session.
_USERS_PERSONA = ("(p.owner_id = :user_id OR EXISTS (SELECT 1 FROM persona_members m"
                  " WHERE m.persona_id = p.id AND m.user_id = :user_id))")
_EXISTS = {  # constant clauses only
    "persona_id": ("persona",
                   f"SELECT 1 FROM personas p WHERE p.id = :id AND {_USERS_PERSONA}"),  # noqa: S608
    "agent_id": ("agent", "SELECT 1 FROM agents a WHERE a.id = :id AND (a.user_id = :user_id"  # noqa: S608
                          " OR EXISTS (SELECT 1 FROM personas p WHERE p.id = a.persona_id"
                          f" AND {_USERS_PERSONA}))"),
    "session_id": ("chat session", "SELECT 1 FROM chat_sessions WHERE id = :id AND user_id = :user_id"),
}


async def resolve_scope(session: AsyncSession, actor: Principal, given: ScopeIn) -> Scope:
    user_id = given.user_id or actor.user_id
    if user_id is None:
        raise Unprocessable("name the user whose memory this is (user_id)", extra={"field": "user_id"})
    if user_id != actor.user_id and not actor.is_admin:
        raise NotFound(f"no user with id {user_id}")
    if given.user_id is not None and actor.is_admin and user_id != actor.user_id:
        if await session.scalar(text("SELECT 1 FROM users WHERE id = :id"), {"id": user_id}) is None:
            raise NotFound(f"no user with id {user_id}")
    for field, (noun, sql) in _EXISTS.items():
        value = getattr(given, field)
        if value is None:
            continue
        if await session.scalar(text(sql), {"id": value, "user_id": user_id}) is None:
            raise NotFound(f"no {noun} with id {value}")
    return Scope(user_id, given.persona_id, given.agent_id, given.session_id)


def content_hash(content: str) -> str:
    """Which texts are one fact: case, spacing, invisible characters (zero-width spaces,
    joiners) and the form of accents (composed or not) aside, as entity names are matched
    (``graph.clean``).  Plain composed text hashes as it did before the last two were
    added; a stored fact that held them is matched by one reconciliation call more."""
    key = unicodedata.normalize("NFC", graph.clean(content).casefold())
    return hashlib.sha256(" ".join(key.split()).encode()).hexdigest()


async def add_memory(
    session: AsyncSession, actor: Principal, scope: Scope, body: MemoryCreate, *,
    source_type: str = "manual", source_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None, audit: bool = True,
) -> Memory:
    entities = [e.model_dump() for e in body.entities]
    relationships = [r.model_dump() for r in body.relationships]
    memory = Memory(
        user_id=scope.user_id, persona_id=scope.persona_id, agent_id=scope.agent_id,
        session_id=scope.session_id, content=body.content.strip(),
        memory_type=body.memory_type, confidence=Decimal(str(round(body.confidence, 4))),
        entities=entities, relationships=relationships,
        entity_names=graph.names(entities, relationships),
        memory_metadata=body.metadata, valid_from=body.valid_from or utcnow(),
        source_type=source_type, source_id=source_id, run_id=run_id,
        content_sha256=content_hash(body.content),
    )
    session.add(memory)
    await session.flush()
    await graph.attach(session, memory)
    session.add(MemoryHistory(memory_id=memory.id, user_id=memory.user_id, event="add",
                              new_content=memory.content, new_confidence=memory.confidence,
                              actor_id=actor.user_id))
    await session.flush()
    if audit:
        await record(session, "memory.create", user_id=actor.user_id, persona_id=scope.persona_id,
                     resource_type=RESOURCE, resource_id=memory.id,
                     metadata={"source_type": source_type, "memory_type": memory.memory_type})
    return memory


async def get_memory(session: AsyncSession, actor: Principal, memory_id: uuid.UUID,
                     *, lock: bool = False) -> Memory:
    stmt = select(Memory).where(Memory.id == memory_id)
    if lock:
        stmt = stmt.with_for_update()
    memory = await session.scalar(stmt)
    if memory is None or not (actor.is_admin or memory.user_id == actor.user_id):
        raise NotFound(f"no memory with id {memory_id}")
    return memory


async def list_memories(
    session: AsyncSession, actor: Principal, scope: Scope, *, exact: bool = False,
    memory_type: str | None = None, status: str | None = "active", as_of: datetime | None = None,
    include_invalid: bool = False, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Memory], str | None]:
    """Newest first.  By default what is true now (valid from now or before, not closed);
    ``as_of``: what was true then (valid from before it, not yet closed at it);
    ``include_invalid``: every version, future ones included.  With ``as_of`` the status
    is the one at that time (as a search ``as_of`` reads it): a memory archived later was
    still active then."""
    stmt = scope.where(select(Memory), exact=exact)
    if memory_type is not None:
        stmt = stmt.where(Memory.memory_type == memory_type)
    if status is not None and as_of is not None:  # archived by then, or not yet
        stmt = stmt.where((Memory.archived_at <= as_of) if status == "archived" else
                          Memory.archived_at.is_(None) | (Memory.archived_at > as_of))
    elif status is not None:
        stmt = stmt.where(Memory.status == status)
    if as_of is not None:
        stmt = stmt.where(Memory.valid_from <= as_of,
                          (Memory.valid_to.is_(None)) | (Memory.valid_to > as_of))
    elif not include_invalid:
        stmt = stmt.where(Memory.valid_from <= func.now(),
                          (Memory.valid_to.is_(None)) | (Memory.valid_to > func.now()))
    return await newest_first(session, stmt, Memory.created_at, Memory.id, limit=limit,
                              cursor=cursor)


async def history(session: AsyncSession, actor: Principal, memory_id: uuid.UUID, *,
                  limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                  ) -> tuple[list[MemoryHistory], str | None]:
    """A page of the memory's history, oldest first (each row may carry two texts of
    4,000 characters: a memory changed thousands of times is never one answer)."""
    await get_memory(session, actor, memory_id)
    stmt = select(MemoryHistory).where(MemoryHistory.memory_id == memory_id)
    if cursor is not None:
        stmt = stmt.where(after_time_id(cursor, MemoryHistory.created_at, MemoryHistory.id))
    rows = (await session.scalars(
        stmt.order_by(MemoryHistory.created_at, MemoryHistory.id).limit(limit + 1))).all()
    return page_of(rows, limit, lambda row: time_id_cursor(row.created_at, row.id))


async def update_memory(session: AsyncSession, actor: Principal, memory_id: uuid.UUID,
                        body: MemoryUpdate) -> Memory:
    memory = await get_memory(session, actor, memory_id, lock=True)
    old_content, old_confidence = memory.content, memory.confidence
    # Only what differs is a change: a PATCH that changes nothing ({}, nulls, the same
    # values) leaves no history row, no audit and updated_at (recency) as it was.
    changed: dict[str, bool] = {}
    if body.content is not None and body.content.strip() != memory.content:
        memory.content = body.content.strip()
        memory.content_sha256 = content_hash(body.content)
        memory.embedding = memory.embedding_model = memory.embedding_dim = None  # re-embedded
        changed["content"] = True
    confidence = None if body.confidence is None else Decimal(str(round(body.confidence, 4)))
    if confidence is not None and confidence != memory.confidence:
        memory.confidence = confidence
        changed["confidence"] = True
    if body.memory_type is not None and body.memory_type != memory.memory_type:
        memory.memory_type = body.memory_type
        changed["memory_type"] = True
    if body.metadata is not None and body.metadata != memory.memory_metadata:
        memory.memory_metadata = body.metadata
        changed["metadata"] = True
    if not changed:
        return memory
    memory.updated_at = utcnow()
    session.add(MemoryHistory(memory_id=memory.id, user_id=memory.user_id, event="update",
                              old_content=old_content, new_content=memory.content,
                              old_confidence=old_confidence, new_confidence=memory.confidence,
                              reason=body.reason, actor_id=actor.user_id))
    await session.flush()
    await record(session, "memory.update", user_id=actor.user_id, persona_id=memory.persona_id,
                 resource_type=RESOURCE, resource_id=memory.id, changes=changed)
    return memory


async def invalidate(session: AsyncSession, actor: Principal, memory: Memory, *,
                     at: datetime | None = None, by: uuid.UUID | None = None,
                     reason: str | None = None) -> Memory:
    """A fact that stopped being true: closed at ``at`` (default now), never deleted."""
    when = at or utcnow()
    memory.valid_to = max(when, memory.valid_from)
    memory.invalidated_by_id = by
    memory.updated_at = utcnow()
    await graph.close(session, memory.id, memory.valid_to)
    session.add(MemoryHistory(memory_id=memory.id, user_id=memory.user_id, event="invalidate",
                              old_content=memory.content, reason=reason, actor_id=actor.user_id,
                              related_memory_id=by))
    await session.flush()
    return memory


async def delete_memory(session: AsyncSession, actor: Principal, memory_id: uuid.UUID) -> None:
    """Delete one memory, its relations and (the trigger of migration 1210, see graph) the
    entities nothing uses any more."""
    memory = await get_memory(session, actor, memory_id, lock=True)
    await session.delete(memory)
    await session.flush()
    await record(session, "memory.delete", user_id=actor.user_id, persona_id=memory.persona_id,
                 resource_type=RESOURCE, resource_id=memory_id)


async def forget(session: AsyncSession, actor: Principal, body: ForgetIn) -> int:
    """Delete every memory of one scope, and nothing of any other (the statement names the
    user and each scope column; row-level security stands behind it), with their relations
    and the entities nothing uses any more."""
    scope = await resolve_scope(session, actor, body)
    narrower = body.include_narrower
    chosen = list((await session.scalars(scope.where(select(Memory.id), exact=not narrower))).all())
    # One array parameter, however many rows (a list would be a parameter each).
    ids = bindparam("ids", chosen, type_=ARRAY(Uuid()))
    result = await session.execute(delete(Memory).where(Memory.id == any_(ids)))
    deleted = int(getattr(result, "rowcount", 0) or 0)
    await record(session, "memory.forget", user_id=actor.user_id, persona_id=scope.persona_id,
                 resource_type=RESOURCE, metadata={
                     "user_id": str(scope.user_id), "deleted": deleted,
                     "agent_id": str(scope.agent_id) if scope.agent_id else None,
                     "session_id": str(scope.session_id) if scope.session_id else None,
                     "include_narrower": narrower})
    return deleted
