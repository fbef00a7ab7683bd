"""The entity graph: entities and relations as rows, written when a memory is stored,
closed when it is invalidated.  (Queries over it: neighbours and paths by recursive CTE.)"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.memory.models import Memory, MemoryRelation

_SPACES = re.compile(r"\s+")

_UPSERT_ENTITY = text("""
INSERT INTO memory_entities (id, user_id, persona_id, name, normalized_name, entity_type,
                             created_at, updated_at)
VALUES (:id, :user_id, :persona_id, :name, :normalized, :entity_type, now(), now())
ON CONFLICT (user_id, coalesce(persona_id, '00000000-0000-0000-0000-000000000000'::uuid),
             normalized_name)
DO UPDATE SET updated_at = now(),
              entity_type = CASE WHEN memory_entities.entity_type = 'thing'
                                 THEN EXCLUDED.entity_type ELSE memory_entities.entity_type END
RETURNING id
""")


def normalize(name: str) -> str:
    """How entity names are matched: case and spacing do not matter."""
    return _SPACES.sub(" ", name).strip().casefold()[:255]


async def upsert_entity(session: AsyncSession, *, user_id: uuid.UUID, persona_id: uuid.UUID | None,
                        name: str, entity_type: str = "thing") -> uuid.UUID:
    from roost.db.base import uuid7

    found = await session.execute(_UPSERT_ENTITY, {
        "id": uuid7(), "user_id": user_id, "persona_id": persona_id,
        "name": _SPACES.sub(" ", name).strip()[:255], "normalized": normalize(name),
        "entity_type": entity_type[:64] or "thing"})
    entity_id: uuid.UUID = found.scalar_one()
    return entity_id


async def attach(session: AsyncSession, memory: Memory) -> None:
    """Entities and relations of ``memory`` (its ``entities`` and ``relationships`` JSON)
    as graph rows, valid from the memory's ``valid_from``."""
    ids: dict[str, uuid.UUID] = {}

    async def entity(name: str, entity_type: str = "thing") -> uuid.UUID:
        key = normalize(name)
        if key not in ids:
            ids[key] = await upsert_entity(session, user_id=memory.user_id,
                                           persona_id=memory.persona_id, name=name,
                                           entity_type=entity_type)
        return ids[key]

    for item in _dicts(memory.entities):
        if str(item.get("name", "")).strip():
            await entity(str(item["name"]), str(item.get("type") or "thing"))
    for item in _dicts(memory.relationships):
        source, relation, target = (str(item.get(k, "")).strip()
                                    for k in ("source", "relation", "target"))
        if not (source and relation and target):
            continue
        session.add(MemoryRelation(
            user_id=memory.user_id, persona_id=memory.persona_id,
            source_entity_id=await entity(source), target_entity_id=await entity(target),
            relation=relation[:128], memory_id=memory.id, valid_from=memory.valid_from,
            valid_to=memory.valid_to))
    await session.flush()


async def close(session: AsyncSession, memory_id: uuid.UUID, at: datetime) -> None:
    """The relations a memory asserted stop being true at ``at`` (its invalidation)."""
    await session.execute(update(MemoryRelation)
                          .where(MemoryRelation.memory_id == memory_id,
                                 MemoryRelation.valid_to.is_(None))
                          .values(valid_to=at))


def _dicts(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    return (i for i in items if isinstance(i, dict))
