"""The entity graph: entities and relations as rows, written when a memory is stored,
closed when it is invalidated, and entities no relation or memory uses any more removed
when memories are deleted.  (Queries over it: neighbours and paths by recursive CTE.)

**Lock order.**  Every writer locks a scope's entity rows in one order, by normalised
name (code point order, ``COLLATE "C"`` in SQL): :func:`upsert_entities` writes them in
one multi-row statement in that order and :func:`remove_orphans` locks them in it before
deleting.  Concurrent memories naming the same entities in different orders then wait
for each other instead of deadlocking (12 concurrent adds naming 8 entities in opposite
orders were mostly 503s, ``40P01``, when each entity had its own upsert in the memory's
order)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import uuid7
from roost.memory.models import Memory, MemoryRelation

_SPACES = re.compile(r"\s+")

# One row per distinct normalised name, in the order given (unnest keeps the arrays' order
# and ORDER BY the ordinality makes it explicit): the entity rows are locked in that order.
_UPSERT_ENTITIES = text("""
INSERT INTO memory_entities (id, user_id, persona_id, name, normalized_name, entity_type,
                             created_at, updated_at)
SELECT x.id, CAST(:user_id AS uuid), CAST(:persona_id AS uuid), x.name, x.normalized,
       x.entity_type, now(), now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[]), CAST(:normalized AS text[]),
            CAST(:types AS text[])) WITH ORDINALITY AS x(id, name, normalized, entity_type, n)
ORDER BY x.n
ON CONFLICT (user_id, coalesce(persona_id, '00000000-0000-0000-0000-000000000000'::uuid),
             normalized_name)
DO UPDATE SET updated_at = now(),
              entity_type = CASE WHEN memory_entities.entity_type = 'thing'
                                 THEN EXCLUDED.entity_type ELSE memory_entities.entity_type END
RETURNING id, normalized_name
""")

# How SQL compares a name in a memory's ``entities`` with an entity's normalised name:
# spacing collapsed, lower-cased (normalize() case-folds: the two differ only for the few
# letters whose case folding is not their lower case, such as ß).
_NAMED = ("lower(btrim(regexp_replace(x.value->>'name', '\\s+', ' ', 'g'))) "
          "= lower(e.normalized_name)")

# The candidates no relation references and no memory of the entity's owner and persona
# still names, locked in the writers' order, then deleted.  A statement of its own after
# the lock: it sees what a writer that held one of them committed meanwhile.
_LOCK_CANDIDATES = text("""
SELECT e.id FROM memory_entities e
WHERE e.id = ANY(CAST(:ids AS uuid[]))
ORDER BY e.normalized_name COLLATE "C", e.persona_id
FOR UPDATE
""")
_DELETE_ORPHANS = text(f"""
DELETE FROM memory_entities e
WHERE e.id = ANY(CAST(:ids AS uuid[]))
  AND NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.source_entity_id = e.id)
  AND NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.target_entity_id = e.id)
  AND NOT EXISTS (
    SELECT 1 FROM memories m, jsonb_array_elements(m.entities) x
    WHERE m.user_id = e.user_id AND m.persona_id IS NOT DISTINCT FROM e.persona_id
      AND jsonb_typeof(x.value) = 'object' AND {_NAMED})
""")  # noqa: S608 (a fixed clause)


def normalize(name: str) -> str:
    """How entity names are matched: case and spacing do not matter."""
    return _SPACES.sub(" ", name).strip().casefold()[:255]


async def upsert_entities(session: AsyncSession, *, user_id: uuid.UUID,
                          persona_id: uuid.UUID | None,
                          entities: Iterable[tuple[str, str]]) -> dict[str, uuid.UUID]:
    """The ids of the entities ``(name, type)`` of one scope, created or touched (a type
    replaces ``thing``), by normalised name.  The first of several with one normalised
    name gives its name and type; blank names are skipped.  One statement, the rows in
    normalised-name order (see "Lock order")."""
    chosen: dict[str, tuple[str, str]] = {}
    for name, entity_type in entities:
        key = normalize(name)
        if key and key not in chosen:
            chosen[key] = (_SPACES.sub(" ", name).strip()[:255], entity_type[:64] or "thing")
    if not chosen:
        return {}
    keys = sorted(chosen)
    found = await session.execute(_UPSERT_ENTITIES, {
        "user_id": user_id, "persona_id": persona_id, "ids": [uuid7() for _ in keys],
        "names": [chosen[k][0] for k in keys], "normalized": keys,
        "types": [chosen[k][1] for k in keys]})
    return {row.normalized_name: row.id for row in found}


async def attach(session: AsyncSession, memory: Memory) -> None:
    """Entities and relations of ``memory`` (its ``entities`` and ``relationships`` JSON)
    as graph rows, valid from the memory's ``valid_from``."""
    triples = []
    for item in _dicts(memory.relationships):
        source, relation, target = (str(item.get(k, "")).strip()
                                    for k in ("source", "relation", "target"))
        if source and relation and target and normalize(source) and normalize(target):
            triples.append((source, relation, target))
    named = [(str(item.get("name", "")), str(item.get("type") or "thing"))
             for item in _dicts(memory.entities)]
    ids = await upsert_entities(
        session, user_id=memory.user_id, persona_id=memory.persona_id,
        entities=[*named, *((end, "thing") for s, _, t in triples for end in (s, t))])
    for source, relation, target in triples:
        session.add(MemoryRelation(
            user_id=memory.user_id, persona_id=memory.persona_id,
            source_entity_id=ids[normalize(source)], target_entity_id=ids[normalize(target)],
            relation=relation[:128], memory_id=memory.id, valid_from=memory.valid_from,
            valid_to=memory.valid_to))
    await session.flush()


async def close(session: AsyncSession, memory_id: uuid.UUID, at: datetime) -> None:
    """The relations a memory asserted stop being true at ``at`` (its invalidation)."""
    await session.execute(update(MemoryRelation)
                          .where(MemoryRelation.memory_id == memory_id,
                                 MemoryRelation.valid_to.is_(None))
                          .values(valid_to=at))


async def entities_of(session: AsyncSession, memory_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The entities the memories use: their relations' ends and the entities their
    ``entities`` name (to pass to :func:`remove_orphans` once they are deleted)."""
    if not memory_ids:
        return []
    found = await session.execute(text(f"""
        SELECT r.source_entity_id FROM memory_relations r WHERE r.memory_id = ANY(CAST(:ids AS uuid[]))
        UNION
        SELECT r.target_entity_id FROM memory_relations r WHERE r.memory_id = ANY(CAST(:ids AS uuid[]))
        UNION
        SELECT e.id FROM memories m, jsonb_array_elements(m.entities) x, memory_entities e
        WHERE m.id = ANY(CAST(:ids AS uuid[])) AND jsonb_typeof(x.value) = 'object'
          AND e.user_id = m.user_id AND e.persona_id IS NOT DISTINCT FROM m.persona_id
          AND {_NAMED}"""), {"ids": list(memory_ids)})  # noqa: S608 (a fixed clause)
    return list(found.scalars())


async def remove_orphans(session: AsyncSession, entity_ids: Sequence[uuid.UUID]) -> int:
    """Delete those of ``entity_ids`` that no relation references and no memory of their
    owner (and persona) names any more: what deleting memories left unused.  Returns how
    many were deleted."""
    if not entity_ids:
        return 0
    ids = sorted(set(entity_ids))
    await session.execute(_LOCK_CANDIDATES, {"ids": ids})
    result = await session.execute(_DELETE_ORPHANS, {"ids": ids})
    return int(getattr(result, "rowcount", 0) or 0)


def _dicts(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    return (i for i in items if isinstance(i, dict))
