"""The entity graph: entities and relations as rows, written when a memory is stored,
closed when it is invalidated, and entities no relation or memory uses any more removed
when memories are deleted.  (Queries over it: neighbours and paths by recursive CTE.)

**One normaliser.**  :func:`normalize` is the only one: a memory keeps the normalised
names it uses (``entity_names``, :func:`names`, written with it), and the clean-up after
memories are deleted (the trigger ``roost_memory_orphans`` of migration 1210, which runs
for every deletion of memories, cascades of agents, chat sessions, personas and users
included) compares ``normalized_name`` with those, never a name normalised in SQL (whose
``lower`` and ``\\s`` differ from ``casefold`` and Python's white space: ß, U+00A0).

**Lock order.**  Every writer locks a scope's entity rows in one order, by normalised
name (code point order, ``COLLATE "C"`` in SQL): :func:`upsert_entities` writes them in
one multi-row statement in that order and the clean-up trigger locks its candidates in
it before deleting.  Concurrent memories naming the same entities in different orders
then wait for each other instead of deadlocking (12 concurrent adds naming 8 entities in
opposite orders were mostly 503s, ``40P01``, when each entity had its own upsert in the
memory's order)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import uuid7
from roost.inputs import FILLERS
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

MAX_KEY_CHARS: Final = 255  # memory_entities.normalized_name
KEPT_KEY_CHARS: Final = MAX_KEY_CHARS - 17  # of a longer key, before "#<16 hex digits>"


def clean(name: str) -> str:
    """``name`` as an entity (or a relation) is named: format characters (Unicode category
    Cf: zero-width spaces and joiners, the byte order mark, bidirectional marks), letters
    and marks that show nothing (:data:`roost.inputs.FILLERS`: Hangul fillers, the
    grapheme joiner) and control characters but white space (Cc: NUL, ESC, DEL...) dropped,
    composed (NFC: ``e`` and a combining accent is ``é``), white space collapsed and
    trimmed.  Invisible, or spelt differently for one look, they would make look-alike or
    invisible entities and relations."""
    visible = "".join(c for c in name if unicodedata.category(c) != "Cf" and c not in FILLERS
                      and (c.isspace() or unicodedata.category(c) != "Cc"))
    return _SPACES.sub(" ", unicodedata.normalize("NFC", visible)).strip()


def normalize(name: str) -> str:
    """How entity names are matched: case, spacing, format and control characters and
    composed or decomposed accents do not matter (NFC again after casefolding, which may
    decompose).  Casefolding may lengthen a name ("ß" is "ss"): a key over the column's
    255 characters keeps its first 238 and a digest of the whole, so two names that differ
    past the cut stay two entities (a plain cut merged them)."""
    key = full_key(name)
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{key[:KEPT_KEY_CHARS]}#{digest}"


def full_key(name: str) -> str:
    """``normalize(name)`` before any cut: what a search for part of a name matches."""
    return unicodedata.normalize("NFC", clean(name).casefold())


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
            chosen[key] = (clean(name)[:255], clean(entity_type)[:64] or "thing")
    if not chosen:
        return {}
    keys = sorted(chosen)
    found = await session.execute(_UPSERT_ENTITIES, {
        "user_id": user_id, "persona_id": persona_id, "ids": [uuid7() for _ in keys],
        "names": [chosen[k][0] for k in keys], "normalized": keys,
        "types": [chosen[k][1] for k in keys]})
    return {row.normalized_name: row.id for row in found}


def names(entities: Iterable[Any], relationships: Iterable[Any]) -> list[str]:
    """The normalised names a memory's ``entities`` and ``relationships`` JSON use: the
    entities :func:`attach` links it to (``Memory.entity_names``, sorted, no blanks)."""
    named = {normalize(str(item.get("name", ""))) for item in _dicts(entities)}
    ends = {normalize(end) for s, _, t in _triples(relationships) for end in (s, t)}
    return sorted((named | ends) - {""})


async def attach(session: AsyncSession, memory: Memory) -> None:
    """Entities and relations of ``memory`` (its ``entities`` and ``relationships`` JSON)
    as graph rows, valid from the memory's ``valid_from``."""
    triples = _triples(memory.relationships)
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
    """The relations a memory asserted stop being true at ``at`` (its invalidation), or
    where they started if later: a learned update adds relations true from then on, and
    the memory may be invalidated as of an earlier time (a fact's ``valid_from``)."""
    await session.execute(update(MemoryRelation)
                          .where(MemoryRelation.memory_id == memory_id,
                                 MemoryRelation.valid_to.is_(None))
                          .values(valid_to=func.greatest(at, MemoryRelation.valid_from)))


def _triples(relationships: Iterable[Any]) -> list[tuple[str, str, str]]:
    """The relationships that make relations: source, relation and target not blank (the
    relation as :func:`clean` names it: one of only format characters is blank too)."""
    triples = []
    for item in _dicts(relationships):
        source, relation, target = (clean(str(item.get(k, "")))
                                    for k in ("source", "relation", "target"))
        if relation and normalize(source) and normalize(target):
            triples.append((source, relation, target))
    return triples


def _dicts(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    return (i for i in items if isinstance(i, dict))
