"""Entity names are composed (NFC), and a relation of only format characters is none.

``roost.memory.graph`` now composes names (Unicode NFC, before and after casefolding):
``Café`` typed as one code point and as ``e`` plus a combining accent is one entity, as
``STRASSE`` is ``Straße``.  A relation is cleaned as a name is (format characters such as
U+200B dropped, white space collapsed): one of only such characters is blank and makes no
relation.  This revision brings the stored graph to the same rules, by the same Python
functions (``graph.clean``, ``graph.normalize``, ``graph.names``), so the clean-up trigger
of 1210 (``roost_memory_orphans``), which compares a memory's ``entity_names`` with the
entities' ``normalized_name``, compares names normalised one way:

* ``memory_relations.relation`` cleaned; relations left blank are deleted.
* ``memory_entities.name`` and ``normalized_name`` recomputed.  Entities of one user and
  persona that now share a normalised name become one: the oldest (``created_at``, then id)
  stays, the others' relations are moved to it, it takes their type if it had none
  (``thing``), and they are deleted.
* ``memories.entity_names`` recomputed.
* The entities only the deleted relations used (no relation, no memory names them) are
  removed, as the trigger would have.

Only rows that may change are read: text that is not plain printable ASCII words separated
by single spaces (names), JSON that is not ASCII (memories); the rules change nothing else.
The downgrade leaves the data as it is.

Revision ID: 1290
Revises: 1280
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from roost.memory.graph import clean, names, normalize

revision: str = "1290"
down_revision: str | Sequence[str] | None = "1280"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

# The rows the rules may change: text that is not printable ASCII words separated by
# single spaces, JSON that is not ASCII.  ``{after}``: the batch's keyset condition.
_RELATIONS = """
SELECT id, relation, source_entity_id, target_entity_id FROM memory_relations
 WHERE {after} AND relation !~ '^[!-~]+( [!-~]+)*$'"""
_ENTITIES = """
SELECT id, name, normalized_name FROM memory_entities
 WHERE {after} AND (name !~ '^[!-~]+( [!-~]+)*$' OR normalized_name !~ '^[!-~]+( [!-~]+)*$')"""
_MEMORIES = """
SELECT id, entities, relationships, entity_names FROM memories
 WHERE {after} AND (octet_length(entities::text) <> length(entities::text)
                    OR octet_length(relationships::text) <> length(relationships::text))"""

_MERGE = """
CREATE TEMP TABLE roost_1290_merge ON COMMIT DROP AS
WITH k AS (
  SELECT e.id, e.user_id, e.created_at,
         coalesce(e.persona_id, '00000000-0000-0000-0000-000000000000'::uuid) AS scope,
         coalesce(f.key, e.normalized_name) AS key
    FROM memory_entities e LEFT JOIN roost_1290_fix f ON f.id = e.id
   WHERE coalesce(f.key, e.normalized_name) IN (SELECT key FROM roost_1290_fix)),
r AS (
  SELECT id, first_value(id) OVER (PARTITION BY user_id, scope, key
                                   ORDER BY created_at, id) AS keeper
    FROM k)
SELECT id, keeper FROM r WHERE id <> keeper
"""
_KEEPER_TYPES = """
UPDATE memory_entities e SET entity_type = t.entity_type
  FROM (SELECT DISTINCT ON (m.keeper) m.keeper, d.entity_type
          FROM roost_1290_merge m JOIN memory_entities d ON d.id = m.id
         WHERE d.entity_type <> 'thing'
         ORDER BY m.keeper, d.created_at, d.id) t
 WHERE e.id = t.keeper AND e.entity_type = 'thing'
"""

# The ends of the deleted relations (:ids, or the entity they were merged into) that
# 1210's trigger would remove: no relation references them, no memory of their user and
# persona names them.
_ORPHANS = """
DELETE FROM memory_entities e
 WHERE (e.id = ANY(:ids) OR e.id IN (SELECT keeper FROM roost_1290_merge WHERE id = ANY(:ids)))
AND NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.source_entity_id = e.id)
AND NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.target_entity_id = e.id)
AND NOT EXISTS (SELECT 1 FROM memories m
                WHERE m.user_id = e.user_id AND m.persona_id IS NOT DISTINCT FROM e.persona_id
                  AND m.entity_names @> ARRAY[e.normalized_name::text])
"""


def _batches(bind: sa.Connection, query: str) -> list[sa.Row[tuple[object, ...]]]:
    """Every row of ``query`` (selecting ``id`` first, with ``{after}`` in its WHERE), read
    by id in batches."""
    rows: list[sa.Row[tuple[object, ...]]] = []
    after = None
    while True:
        part = bind.execute(sa.text(query.format(
            after="(CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))")
            + " ORDER BY id LIMIT :limit"), {"after": after, "limit": BATCH}).all()
        if not part:
            return rows
        rows.extend(part)
        after = part[-1].id


def _relations(bind: sa.Connection) -> list[uuid.UUID]:
    """Relations cleaned as graph.clean names them, the blank ones deleted: their ends."""
    rows = _batches(bind, _RELATIONS)
    changed = [{"id": r.id, "relation": clean(r.relation)[:128]} for r in rows
               if clean(r.relation)[:128] != r.relation]
    blank = [c["id"] for c in changed if not c["relation"]]
    if blank:
        bind.execute(sa.text("DELETE FROM memory_relations WHERE id = ANY(:ids)"),
                     {"ids": blank})
    if kept := [c for c in changed if c["relation"]]:
        bind.execute(sa.text("UPDATE memory_relations SET relation = :relation WHERE id = :id"),
                     kept)
    gone = set(blank)
    return [end for r in rows if r.id in gone for end in (r.source_entity_id, r.target_entity_id)]


def _entities(bind: sa.Connection) -> None:
    """Names and normalised names recomputed; entities then sharing one merged."""
    rows = _batches(bind, _ENTITIES)
    fixes = [{"id": r.id, "name": clean(r.name)[:255], "key": normalize(r.name)} for r in rows]
    fixes = [f for f, r in zip(fixes, rows, strict=True)
             if (f["name"], f["key"]) != (r.name, r.normalized_name)]
    bind.execute(sa.text("CREATE TEMP TABLE roost_1290_fix (id uuid PRIMARY KEY, name text,"
                         " key text) ON COMMIT DROP"))
    if fixes:
        bind.execute(sa.text("INSERT INTO roost_1290_fix VALUES (:id, :name, :key)"), fixes)
    bind.execute(sa.text(_MERGE))
    for end in ("source_entity_id", "target_entity_id"):
        bind.execute(sa.text(f"UPDATE memory_relations r SET {end} = m.keeper"  # noqa: S608
                             f" FROM roost_1290_merge m WHERE r.{end} = m.id"))
    bind.execute(sa.text(_KEEPER_TYPES))
    bind.execute(sa.text("DELETE FROM memory_entities WHERE id IN (SELECT id FROM roost_1290_merge)"))
    bind.execute(sa.text("UPDATE memory_entities e SET name = f.name, normalized_name = f.key"
                         " FROM roost_1290_fix f WHERE e.id = f.id"))


def _memories(bind: sa.Connection) -> None:
    """``entity_names`` as graph.names computes them now."""
    rows = _batches(bind, _MEMORIES)
    changed = [{"id": r.id, "names": names(r.entities, r.relationships)} for r in rows]
    changed = [c for c, r in zip(changed, rows, strict=True) if c["names"] != r.entity_names]
    if changed:
        bind.execute(sa.text("UPDATE memories SET entity_names = :names WHERE id = :id")
                     .bindparams(sa.bindparam("names", type_=postgresql.ARRAY(sa.Text()))),
                     changed)


def upgrade() -> None:
    bind = op.get_bind()
    ends = _relations(bind)
    _entities(bind)
    _memories(bind)
    if ends:
        bind.execute(sa.text(_ORPHANS), {"ids": ends})
    bind.execute(sa.text("DROP TABLE roost_1290_fix, roost_1290_merge"))


def downgrade() -> None:
    pass
