"""Entities go with their memories, however the memories go, compared by one normaliser.

Deleting memories removed the entities only they named, but compared a memory's names with
an entity's ``normalized_name`` in SQL (``lower``, ``\\s+``, ``btrim``) while Python had
normalised it (``casefold``, Python's white space, ``strip``): an entity named ``Straße``
or ``Ada<U+00A0>Lovelace`` stayed when its only memory went, and one a live memory still
named (``Weiß``) was deleted with another.  Memories deleted by a cascade (an agent's, a
chat session's) left theirs behind: only the memory service cleaned up.

* ``memories.entity_names``: the normalised names a memory's ``entities`` and
  ``relationships`` use, computed by Python (``roost.memory.graph.names``) when they are
  written, backfilled here by the same function, with a GIN index.
* ``roost_memory_orphans``: an ``AFTER DELETE`` statement trigger on ``memories`` (its
  deleted rows as a transition table), so every deletion, by the memory service or by a
  foreign key's cascade (agents, chat sessions, personas, users), removes the entities the
  deleted memories named that no relation references and no memory of the same user and
  persona names any more.  It locks them in the writers' order (normalised name, code
  point order; roost.memory.graph "Lock order") before deleting, in a statement of its
  own (it sees what a writer holding one of them committed meanwhile).  SECURITY DEFINER:
  it decides on every memory of the owner, not those the deleting role sees, and deletes
  only entities of the deleted memories' owners.
* The entities earlier deletions left behind so are removed once here.

Revision ID: 1210
Revises: 1200
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from roost.memory.graph import names

revision: str = "1210"
down_revision: str | Sequence[str] | None = "1200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

# The same test the trigger makes of its candidates, for every entity (the backfill's
# clean-up of what earlier deletions left).
UNUSED = """
NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.source_entity_id = e.id)
AND NOT EXISTS (SELECT 1 FROM memory_relations r WHERE r.target_entity_id = e.id)
AND NOT EXISTS (SELECT 1 FROM memories m
                WHERE m.user_id = e.user_id AND m.persona_id IS NOT DISTINCT FROM e.persona_id
                  AND m.entity_names @> ARRAY[e.normalized_name::text])
"""

# search_path pinned: a SECURITY DEFINER function must not resolve names through a schema
# the caller controls.
ORPHANS = rf"""
CREATE FUNCTION roost_memory_orphans() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  candidates uuid[];
BEGIN
  SELECT array_agg(DISTINCT e.id) INTO candidates
    FROM gone m CROSS JOIN LATERAL unnest(m.entity_names) AS n(name)
    JOIN memory_entities e
      ON e.user_id = m.user_id
     AND coalesce(e.persona_id, '00000000-0000-0000-0000-000000000000'::uuid)
         = coalesce(m.persona_id, '00000000-0000-0000-0000-000000000000'::uuid)
     AND e.normalized_name = n.name;
  IF candidates IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM 1 FROM memory_entities e WHERE e.id = ANY(candidates)
    ORDER BY e.normalized_name COLLATE "C", e.persona_id
    FOR UPDATE;
  DELETE FROM memory_entities e WHERE e.id = ANY(candidates) AND {UNUSED};
  RETURN NULL;
END $$
"""  # noqa: S608 (a fixed clause)
TRIGGER = """
CREATE TRIGGER roost_memory_orphans AFTER DELETE ON memories
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION roost_memory_orphans()
"""


def upgrade() -> None:
    op.add_column("memories", sa.Column("entity_names", postgresql.ARRAY(sa.Text()),
                                        server_default=sa.text("'{}'::text[]"), nullable=False))
    bind = op.get_bind()
    after = None
    while True:
        rows = bind.execute(sa.text(
            "SELECT id, entities, relationships FROM memories"
            " WHERE (entities <> '[]' OR relationships <> '[]')"
            " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))"
            " ORDER BY id LIMIT :limit"), {"after": after, "limit": BATCH}).all()
        if not rows:
            break
        bind.execute(sa.text("UPDATE memories SET entity_names = :names WHERE id = :id")
                     .bindparams(sa.bindparam("names", type_=postgresql.ARRAY(sa.Text()))),
                     [{"id": r.id, "names": names(r.entities, r.relationships)} for r in rows])
        after = rows[-1].id
    op.create_index("ix_memories_entity_names", "memories", ["entity_names"],
                    postgresql_using="gin")
    op.execute(f"DELETE FROM memory_entities e WHERE {UNUSED}")  # noqa: S608 (a fixed clause)
    op.execute(ORPHANS)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER roost_memory_orphans ON memories")
    op.execute("DROP FUNCTION roost_memory_orphans()")
    op.drop_index("ix_memories_entity_names", table_name="memories")
    op.drop_column("memories", "entity_names")
